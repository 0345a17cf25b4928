"""Synthetic production traffic for ``groundwatch demo``.

A made-up documentation assistant ("Nimbus Cloud") writes its request log into a SQLite table in
its *own* column names, as a real app would. The mixture is chosen so that every failure mode
shows up: faithful answers, answers that contradict their contexts, answers that go beyond them,
empty retrievals, off-topic questions, refusals, errors and thumbs-down feedback.
Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

TABLE = "chat_logs"

# The app's column names, deliberately not groundwatch's; the demo config maps them.
COLUMNS = {
    "request_id": "req_uuid",
    "timestamp": "created_at",
    "question": "user_question",
    "contexts": "retrieved_docs",
    "answer": "llm_output",
    "route": "endpoint",
    "model": "llm_model",
    "latency_ms": "latency",
    "status": "outcome",
    "error": "error_message",
    "prompt_tokens": "tokens_in",
    "completion_tokens": "tokens_out",
    "cost_usd": "cost",
    "feedback": "thumbs",
    "metadata": "extra",
}


@dataclass(frozen=True)
class Fact:
    route: str
    question: str
    passage: str
    answer: str  # supported by the passage
    contradiction: str  # the same claim with a changed number, name or negation
    embellishment: str  # a plausible sentence the passage does not support


FACTS = (
    Fact("docs_qa", "How long are deleted buckets kept before they are purged?",
         "Deleted storage buckets are kept in a recoverable state for 30 days. After 30 days the "
         "bucket and its objects are purged permanently and cannot be restored.",
         "Deleted buckets stay recoverable for 30 days, after which they are purged permanently.",
         "Deleted buckets stay recoverable for 90 days, after which they are purged permanently.",
         "Support can still restore a purged bucket from cold backups for a fee."),
    Fact("docs_qa", "Which regions support GPU instances?",
         "GPU instances are available in the eu-west-2 and us-east-1 regions. Other regions offer "
         "CPU instances only.",
         "GPU instances are offered in eu-west-2 and us-east-1; other regions have CPU only.",
         "GPU instances are offered in ap-south-1 and us-west-1; other regions have CPU only.",
         "GPU capacity is guaranteed with a 99.99% availability SLA."),
    Fact("docs_qa", "What is the maximum object size I can upload?",
         "A single object can be up to 5 TB. Uploads larger than 100 MB should use multipart "
         "upload, which splits the object into parts of 5 MB to 5 GB.",
         "Objects can be up to 5 TB, and anything over 100 MB should use multipart upload.",
         "Objects can be up to 500 GB, and anything over 100 MB should use multipart upload.",
         "Multipart uploads are billed at twice the normal request rate."),
    Fact("docs_qa", "Does Nimbus encrypt data at rest?",
         "All data at rest is encrypted with AES-256. Customers can bring their own keys through "
         "the Key Vault service.",
         "Yes, data at rest is encrypted with AES-256, and you can bring your own keys via Key Vault.",
         "No, data at rest is not encrypted unless you enable Key Vault.",
         "Encryption keys are rotated automatically every week."),
    Fact("billing", "When is my monthly invoice issued?",
         "Invoices are issued on the first business day of each month and are due within 14 "
         "days. Late payments incur a 2% fee.",
         "Invoices go out on the first business day of the month and are due within 14 days.",
         "Invoices go out on the fifteenth of the month and are due within 30 days.",
         "Paying early earns a 5% discount on the next invoice."),
    Fact("billing", "Can I get a refund for unused reserved instances?",
         "Reserved instances are non-refundable. Unused reservations can be exchanged for a "
         "reservation of equal or greater value within the same region.",
         "Reserved instances cannot be refunded, but you can exchange unused ones for an equal or "
         "greater reservation in the same region.",
         "Yes, unused reserved instances are refunded in full at the end of the term.",
         "Exchanges across regions are free during the first month."),
    Fact("billing", "Which payment methods are accepted?",
         "Nimbus accepts credit cards, SEPA direct debit and bank transfer. PayPal is not "
         "supported.",
         "You can pay by credit card, SEPA direct debit or bank transfer.",
         "You can pay by credit card, PayPal or cryptocurrency.",
         "Bank transfers are processed within one hour."),
    Fact("support_chat", "How do I reset my API key?",
         "To reset an API key, open Settings, choose API Keys and click Regenerate. The old key "
         "stops working immediately.",
         "Go to Settings, then API Keys, and click Regenerate; the old key stops working at once.",
         "Go to Settings, then API Keys, and click Regenerate; the old key keeps working for 24 "
         "hours.",
         "You will also receive a text message with the new key."),
    Fact("support_chat", "What are the support hours for the Standard plan?",
         "Standard plan support is available Monday to Friday, 9:00 to 17:00 CET. Premium plans "
         "include 24/7 support.",
         "Standard plan support runs Monday to Friday, 9:00 to 17:00 CET.",
         "Standard plan support is available 24/7, including weekends.",
         "Standard customers can call a dedicated account manager."),
    Fact("support_chat", "How many team members can I invite on the free tier?",
         "The free tier allows up to 3 team members per organization. Paid plans have no limit "
         "on team members.",
         "The free tier lets you invite up to 3 team members per organization.",
         "The free tier lets you invite up to 10 team members per organization.",
         "Free tier members also get 50 GB of shared storage."),
)

OFF_TOPIC = (
    ("What is a good recipe for vegetable lasagna?",
     "Layer pasta sheets with roasted vegetables, ricotta and tomato sauce, then bake for 45 "
     "minutes at 180 degrees."),
    ("Who won the football world cup in 2014?",
     "Germany won the 2014 world cup, beating Argentina 1-0 in the final."),
    ("Can you write me a poem about autumn?",
     "Golden leaves drift slowly down, painting paths in red and brown."),
    ("What is the capital of Australia?", "The capital of Australia is Canberra."),
)

REFUSALS = (
    "I don't know the answer to that based on the documentation.",
    "I'm sorry, I cannot find that information in the documents.",
)

# Probability of each kind of turn.
MIX = (
    ("faithful", 0.55),
    ("contradiction", 0.12),
    ("embellished", 0.12),
    ("empty_retrieval", 0.08),
    ("off_topic", 0.07),
    ("error", 0.03),
    ("refusal", 0.03),
)
MODELS = ("gpt-4o-mini", "llama-3.1-70b")


def _pick_kind(rng: random.Random) -> str:
    x = rng.random()
    for kind, p in MIX:
        if x < p:
            return kind
        x -= p
    return MIX[0][0]


def make_rows(n: int, *, seed: int = 7, start: datetime | None = None,
              broken_share: float = 0.0) -> list[dict[str, object]]:
    """``n`` log rows in the app's own column names; ``broken_share`` of them carry a
    truncated ``retrieved_docs`` JSON, as a log line cut short would."""
    broken = random.Random(seed + 1)
    rng = random.Random(seed)
    start = start or datetime.now(UTC) - timedelta(minutes=30)
    rows: list[dict[str, object]] = []
    for i in range(n):
        fact = rng.choice(FACTS)
        other = rng.choice([f for f in FACTS if f is not fact])
        kind = _pick_kind(rng)
        question, contexts = fact.question, [fact.passage, other.passage]
        answer, status, error, thumbs = fact.answer, "ok", None, 0
        route = fact.route
        if kind == "contradiction":
            answer = fact.contradiction
            thumbs = -1 if rng.random() < 0.4 else 0
        elif kind == "embellished":
            answer = f"{fact.answer} {fact.embellishment}"
        elif kind == "empty_retrieval":
            contexts = []
            answer = rng.choice([fact.contradiction, rng.choice(REFUSALS)])
        elif kind == "off_topic":
            question, answer = rng.choice(OFF_TOPIC)
            contexts = [other.passage]
            route = "support_chat"
        elif kind == "error":
            answer, status, error = "", "error", "upstream model timeout after 30s"
        elif kind == "refusal":
            answer = rng.choice(REFUSALS)
        if kind == "faithful" and rng.random() < 0.05:
            thumbs = 1
        docs = json.dumps(contexts)
        if broken.random() < broken_share:
            docs = docs[: len(docs) // 2]  # a log line cut short: groundwatch must reject it
        tokens_in = 200 + 60 * len(contexts) + rng.randint(0, 80)
        tokens_out = max(1, len(answer) // 4)
        rows.append({
            "req_uuid": f"req-{seed}-{i:06d}",
            "created_at": start + timedelta(milliseconds=250 * i),
            "endpoint": route,
            "llm_model": rng.choice(MODELS),
            "user_question": question,
            "retrieved_docs": docs,
            "llm_output": answer,
            "latency": round(rng.lognormvariate(6.5, 0.5), 1) if status == "ok" else 30000.0,
            "outcome": status,
            "error_message": error,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost": round(tokens_in * 1.5e-7 + tokens_out * 6e-7, 8),
            "thumbs": thumbs,
            "extra": json.dumps({"kind": kind}),
        })
    return rows


def create_log_table(url: str) -> sa.Table:
    """Create (or replace) the app's log table at ``url``."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    table = sa.Table(
        TABLE, meta,
        sa.Column("req_uuid", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False, index=True),
        sa.Column("endpoint", sa.String(64)),
        sa.Column("llm_model", sa.String(64)),
        sa.Column("user_question", sa.Text),
        sa.Column("retrieved_docs", sa.Text),
        sa.Column("llm_output", sa.Text),
        sa.Column("latency", sa.Float),
        sa.Column("outcome", sa.String(16)),
        sa.Column("error_message", sa.Text),
        sa.Column("tokens_in", sa.Integer),
        sa.Column("tokens_out", sa.Integer),
        sa.Column("cost", sa.Float),
        sa.Column("thumbs", sa.Integer),
        sa.Column("extra", sa.Text),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    engine.dispose()
    return table


def write_rows(url: str, rows: list[dict[str, object]]) -> None:
    """Append ``rows`` to the app's log table (created if missing)."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    table = sa.Table(TABLE, meta, autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{k: v for k, v in r.items()} for r in rows])
    engine.dispose()


def write_demo_log(path: Path, n: int, *, seed: int = 7, broken_share: float = 0.01) -> str:
    """Write ``n`` rows into a fresh SQLite file; returns its SQLAlchemy URL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    create_log_table(url)
    write_rows(url, make_rows(n, seed=seed, broken_share=broken_share))
    return url
