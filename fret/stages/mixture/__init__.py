"""The mixture: academic data sets converted to unified rows, mixed with other unified shards,
de-duplicated and decontaminated."""
STAGES = {
    "convert": "fret.stages.mixture.convert:ConvertStage",
    "mix": "fret.stages.mixture.mix:MixStage",
}
