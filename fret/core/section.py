"""The base of every settings section, apart so that config.py and the executor block share it."""
from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors."""
    model_config = ConfigDict(extra="forbid")
