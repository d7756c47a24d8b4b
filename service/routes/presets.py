"""The presets resource."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service import presets
from service.schemas import PresetOut

router = APIRouter(prefix="/v1/presets", tags=["presets"])


@router.get("", response_model=list[PresetOut])
async def list_presets() -> list[PresetOut]:
    """Every preset with its spec and trial count; submit one with ``{"preset": NAME}``."""
    found = await run_in_threadpool(presets.available)
    return [PresetOut(**presets.describe(p.spec) | {"name": p.name}) for p in found]
