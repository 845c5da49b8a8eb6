"""MultiLongDoc (BGE-M3): long documents -> one LLM question about a random paragraph -> (question, document).

`longdocs` holds whole documents (Passage rows) and `questions` Query rows (passage_id = document
id), so the shared `embed` and `mine` give the optional hard negatives.
"""
STAGES = {
    "longdocs": "fret.stages.multilongdoc.longdocs:LongDocsStage",
    "questions": "fret.stages.multilongdoc.questions:QuestionsStage",
    "embed": "fret.stages.multilongdoc.neighbours:LongDocEmbedStage",
    "mine": "fret.stages.multilongdoc.neighbours:LongDocMineStage",
    "export": "fret.stages.multilongdoc.export:MLDExportStage",
}
