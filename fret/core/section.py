"""The base of every settings section, apart so that config.py and the executor block share it."""
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_serializer


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors."""
    model_config = ConfigDict(extra="forbid")

    # Keys added after runs were made, left out of the dump (so of the settings hash) while they
    # hold this value: an earlier run resumes with nothing to redo, and setting one restarts.
    new_keys: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _omit_new_keys_at_default(self, handler):
        data = handler(self)
        if isinstance(data, dict):
            for key, default in self.new_keys.items():
                if key in data and data[key] == default:
                    del data[key]
        return data
