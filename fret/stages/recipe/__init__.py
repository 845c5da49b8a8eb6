"""The whole recipe in one resumable run: the three generators as sub-runs, converted academic
sets, the mixture, training and evaluation."""
STAGES = {
    "fret": "fret.stages.recipe.subrun:FretSubRun",
    "e5": "fret.stages.recipe.subrun:E5SubRun",
    "multilongdoc": "fret.stages.recipe.subrun:MultiLongDocSubRun",
    "convert": "fret.stages.mixture.convert:ConvertStage",
    "mix": "fret.stages.mixture.mix:MixStage",
    "train": "fret.stages.recipe.train_eval:TrainStage",
    "eval": "fret.stages.recipe.train_eval:EvalStage",
}
