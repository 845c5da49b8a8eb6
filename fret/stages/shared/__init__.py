"""The stages more than one pipeline runs: corpus, sample, embed, mine; and `ask`, the LLM asking
loop (retries, validation, rejects) of every stage that writes with an LLM."""
