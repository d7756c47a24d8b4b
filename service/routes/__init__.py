"""One APIRouter per resource: experiments, presets, health, and the HTML page."""
