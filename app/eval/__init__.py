"""Evaluation: PAUC (ProactiveVideoQA), judges, datasets, the ``duet eval`` runner, synthetic sets.

Modules: ``pauc`` (the arithmetic), ``judges`` (LLM / overlap / exact-match, sqlite cache),
``dataset`` (ProactiveVideoQA and Duet JSONL layouts), ``predictions``, ``scoring`` (judge requests
→ per-turn scores), ``runner`` (engine over a dataset, resumable), ``report`` (JSON, Markdown, PNG
timelines), ``synthetic`` (scripted videos), ``cli`` (``duet eval``).
"""
