"""lm-eval hooks for opdpipe tasks: thin wrappers over the tested scoring in ``opdpipe.tasks``."""
from opdpipe.tasks.graders import score_record


def _score(doc, response):
    return score_record(doc, response)  # the doc's grader, else its task's own scorer


def keep_all(resps, docs):
    """Filter that keeps all k sampled responses per document (lm-eval's default keeps the first)."""
    return [list(r) for r in resps]


def process_greedy(doc, results):
    return {"acc": _score(doc, results[0])}


def process_sampled(doc, results):
    scores = [_score(doc, r) for r in results[0]]
    return {"avg_at_k": sum(scores) / len(scores), "pass_at_k": float(max(scores))}
