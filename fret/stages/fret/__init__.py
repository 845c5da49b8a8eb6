"""FRet (Gecko): passages -> LLM task + query -> seed-embedder neighbours -> LLM rerank -> unified rows."""
STAGES = {
    "corpus": "fret.stages.shared.corpus:CorpusStage",
    "sample": "fret.stages.shared.sample:SampleStage",
    "queries": "fret.stages.fret.queries:QueriesStage",
    "embed": "fret.stages.shared.embed:EmbedStage",
    "mine": "fret.stages.shared.mine:MineStage",
    "rerank": "fret.stages.fret.rerank:RerankStage",
    "export": "fret.stages.fret.export:FretExportStage",
}
