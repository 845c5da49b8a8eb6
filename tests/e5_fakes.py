"""A fake LLM for the E5 and MultiLongDoc control-flow tests (retries, rejects, resume).

It answers brainstorm prompts with a JSON list (one duplicate and one too-short item in it),
example prompts with the JSON object of the group the prompt asks for, written in the language
the prompt names (canned sentences in English, French, German), and BGE-M3 prompts with one
question. settings.extra:
  bad_rate: p        a request answers garbage with probability p (decided by its seed, so a
                     retry, which has another seed, may succeed)
  english_only: true every text in English whatever the prompt asks (language-check rejects)
  crash_after: n     raise KeyboardInterrupt once n requests were answered (a kill mid-stage)
FRET_FAKE_LLM_LOG logs every answered request, as in tests/fakes.py.
The real-model tests cover what the answers mean.
"""
from __future__ import annotations

import hashlib
import json
import re

from fakes import log_answered
from fret.parts.llm.base import BACKENDS, LLM, Generation

SENTENCES = {
    "English": ["The river floods the valley every spring after the snow melts in the mountains.",
                "Farmers in the region grow wheat and barley on the fertile plains near the river.",
                "A small museum in the old town shows tools that were used by the early settlers."],
    "French": ["La rivière inonde la vallée chaque printemps après la fonte des neiges en montagne.",
               "Les agriculteurs de la région cultivent du blé et de l'orge dans les plaines fertiles.",
               "Un petit musée de la vieille ville montre les outils utilisés par les premiers colons."],
    "German": ["Der Fluss überschwemmt das Tal jedes Frühjahr nach der Schneeschmelze in den Bergen.",
               "Die Bauern der Region bauen Weizen und Gerste auf den fruchtbaren Ebenen am Fluss an.",
               "Ein kleines Museum in der Altstadt zeigt Werkzeuge, die von den ersten Siedlern benutzt wurden."],
}


def _unit(*parts) -> float:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16) / 2**32


def _lang(pattern: str, prompt: str) -> str:
    m = re.search(pattern, prompt)
    return m.group(1) if m and m.group(1) in SENTENCES else "English"


class E5FakeLLM(LLM):
    name = "e5fake"
    sent: list = []  # every request answered, across instances

    def _text(self, r) -> str:
        prompt = r.messages[-1][1] if r.messages else r.prompt
        extra = self.settings.extra
        if _unit("bad", r.seed, prompt) < extra.get("bad_rate", 0.0):
            return "I am sorry, I cannot do that. {not json"
        if prompt.startswith("Brainstorm a list"):
            topic = prompt.split("\n")[0].split("useful ")[-1][:40]
            n = int(_unit(r.seed) * 1000)
            tasks = [f"Given a query about {topic} number {n + i}, retrieve relevant documents"
                     for i in range(3)]
            return "Sure! " + json.dumps(tasks + [tasks[0].upper(), "Too short"])
        if "curious AI assistant" in prompt or "好奇" in prompt:
            words = [w for w in re.findall(r"[A-Za-z]{5,}", prompt.split("additional content:")[-1])]
            return f"What does the text say about {' '.join(words[:3]) or 'it'}?"
        if extra.get("english_only"):
            src = tgt = "English"
        else:
            src = _lang(r"(?:should be in|fields should be in|texts should be in|All three are in"
                        r"|is a \w+ in) (\w+)", prompt)
            tgt = _lang(r"translation into (\w+)", prompt)
        a, b, c = SENTENCES[src]
        t = SENTENCES[tgt]
        if '"S1"' in prompt and "translation into" in prompt:
            k = 0 if tgt != src else 1  # the same language twice: keep the three texts distinct
            return json.dumps({"S1": a, "S2": t[k], "S3": t[k + 1]})
        if '"S1"' in prompt:
            return json.dumps({"S1": a, "S2": b, "S3": c})
        if '"input_text"' in prompt:
            return json.dumps({"input_text": a, "label": "geography", "misleading_label": "history"})
        if '"input"' in prompt:
            return "```json\n" + json.dumps({"input": a, "positive_document": b,
                                             "hard_negative_document": c}) + "\n```"
        return json.dumps({"user_query": a, "positive_document": b, "hard_negative_document": c})

    def _generate(self, batch):
        out = []
        for r in batch:
            limit = self.settings.extra.get("crash_after")
            if limit is not None and len(E5FakeLLM.sent) >= limit:
                raise KeyboardInterrupt("simulated crash")
            E5FakeLLM.sent.append(r)
            out.append(Generation(text=self._text(r), prompt_tokens=50, completion_tokens=20))
            log_answered(self, r)
        return out


BACKENDS["e5fake"] = E5FakeLLM
