"""E5-mistral: the LLM brainstorms tasks per task group, then writes one example per task."""
STAGES = {
    "brainstorm": "fret.stages.e5.brainstorm:BrainstormStage",
    "examples": "fret.stages.e5.examples:ExamplesStage",
    "export": "fret.stages.e5.export:E5ExportStage",
}
