"""The generator version: part of every content hash, bumped whenever output bytes change."""

GENERATOR_VERSION = "2"
