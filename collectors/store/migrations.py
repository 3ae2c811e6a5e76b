"""Versioned schema migrations for both backends, applied in order at start (each once, in a transaction).

Append a new ``(version, name, {dialect: [statements]})`` to ``MIGRATIONS`` to change the schema; never edit
a released one. ``schema_migrations`` records what was applied.
"""

from __future__ import annotations

_SQLITE_V1 = [
    """CREATE TABLE interactions (
        request_id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        route TEXT NOT NULL,
        experiment TEXT NOT NULL,
        variant TEXT NOT NULL,
        role TEXT NOT NULL,
        parent_id TEXT,
        upstream TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        latency_ms REAL NOT NULL,
        ttft_ms REAL,
        stream INTEGER NOT NULL,
        response_id TEXT,
        record TEXT NOT NULL
    )""",
    "CREATE INDEX interactions_ts ON interactions (ts, request_id)",
    "CREATE INDEX interactions_route_ts ON interactions (route, ts)",
    "CREATE INDEX interactions_response_id ON interactions (response_id) WHERE response_id IS NOT NULL",
    """CREATE TABLE feedback (
        feedback_id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        request_id TEXT,
        response_id TEXT,
        score REAL,
        label TEXT,
        record TEXT NOT NULL,
        counted INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX feedback_request_id ON feedback (request_id) WHERE request_id IS NOT NULL",
    "CREATE INDEX feedback_response_id ON feedback (response_id) WHERE response_id IS NOT NULL",
    "CREATE INDEX feedback_ts ON feedback (ts)",
]

_POSTGRES_V1 = [
    """CREATE TABLE interactions (
        request_id TEXT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        route TEXT NOT NULL,
        experiment TEXT NOT NULL,
        variant TEXT NOT NULL,
        role TEXT NOT NULL,
        parent_id TEXT,
        upstream TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        ttft_ms DOUBLE PRECISION,
        stream BOOLEAN NOT NULL,
        response_id TEXT,
        record TEXT NOT NULL
    )""",
    "CREATE INDEX interactions_ts ON interactions (ts, request_id)",
    "CREATE INDEX interactions_route_ts ON interactions (route, ts)",
    "CREATE INDEX interactions_response_id ON interactions (response_id) WHERE response_id IS NOT NULL",
    """CREATE TABLE feedback (
        feedback_id TEXT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        request_id TEXT,
        response_id TEXT,
        score DOUBLE PRECISION,
        label TEXT,
        record TEXT NOT NULL,
        counted BOOLEAN NOT NULL DEFAULT FALSE
    )""",
    "CREATE INDEX feedback_request_id ON feedback (request_id) WHERE request_id IS NOT NULL",
    "CREATE INDEX feedback_response_id ON feedback (response_id) WHERE response_id IS NOT NULL",
    "CREATE INDEX feedback_ts ON feedback (ts)",
]

# the jobs inside `turnout serve`: one row per job, its lease (one runner across replicas) and its last runs
_JOBS = """CREATE TABLE job_state (
    job TEXT PRIMARY KEY,
    holder TEXT,
    lease_until {real},
    last_started {real},
    last_finished {real},
    last_success {real},
    last_result TEXT,
    last_error TEXT,
    runs_ok INTEGER NOT NULL DEFAULT 0,
    runs_failed INTEGER NOT NULL DEFAULT 0
)"""

# eval runs (a row inserted as running, turned complete with its results in one transaction) and their cases
_EVALS = [
    """CREATE TABLE eval_runs (
        run_id TEXT PRIMARY KEY,
        suite TEXT NOT NULL,
        suite_sha256 TEXT NOT NULL,
        upstream TEXT NOT NULL,
        model TEXT NOT NULL,
        route TEXT,
        dataset TEXT,
        source TEXT NOT NULL,
        status TEXT NOT NULL,
        started {real} NOT NULL,
        finished {real},
        cases INTEGER NOT NULL,
        passed INTEGER,
        pass_rate {real},
        score {real},
        threshold {real} NOT NULL,
        judge_kappa {real},
        notes TEXT NOT NULL
    )""",
    "CREATE INDEX eval_runs_started ON eval_runs (started)",
    "CREATE INDEX eval_runs_latest ON eval_runs (suite, upstream, status, finished)",
    """CREATE TABLE eval_results (
        run_id TEXT NOT NULL,
        case_id TEXT NOT NULL,
        passed INTEGER NOT NULL,
        score {real} NOT NULL,
        latency_ms {real},
        error TEXT,
        record TEXT NOT NULL,
        PRIMARY KEY (run_id, case_id)
    )""",
]

# drift checks: descriptors cached per described interaction, each check's result, the upstreams' reported
# models, and how far the model scan has read
_DRIFT = [
    """CREATE TABLE drift_descriptors (
        request_id TEXT PRIMARY KEY,
        route TEXT NOT NULL,
        ts {real} NOT NULL,
        descriptor TEXT NOT NULL
    )""",
    "CREATE INDEX drift_descriptors_route_ts ON drift_descriptors (route, ts)",
    """CREATE TABLE drift_checks (
        route TEXT NOT NULL,
        checked_at {real} NOT NULL,
        window_start {real} NOT NULL,
        window_end {real} NOT NULL,
        reference TEXT NOT NULL,
        published INTEGER NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (route, checked_at)
    )""",
    """CREATE TABLE upstream_models (
        upstream TEXT NOT NULL,
        model TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        first_seen {real} NOT NULL,
        last_seen {real} NOT NULL,
        PRIMARY KEY (upstream, model, fingerprint)
    )""",
    "CREATE TABLE scan_positions (name TEXT PRIMARY KEY, position {real} NOT NULL)",
]

# the review queue (one item per primary interaction, its status the latest decision's) and every decision
_REVIEW = [
    """CREATE TABLE review_items (
        id TEXT PRIMARY KEY,
        route TEXT NOT NULL,
        variant TEXT NOT NULL,
        reason TEXT NOT NULL,
        ts {real} NOT NULL,
        queued_at {real} NOT NULL,
        status TEXT NOT NULL,
        decided_at {real},
        answer TEXT,
        score {real},
        reviewer TEXT
    )""",
    "CREATE INDEX review_items_status_ts ON review_items (status, ts, id)",
    "CREATE INDEX review_items_route_status ON review_items (route, status, ts)",
    """CREATE TABLE review_decisions (
        decision_id TEXT PRIMARY KEY,
        item_id TEXT NOT NULL,
        action TEXT NOT NULL,
        answer TEXT,
        score {real},
        reviewer TEXT NOT NULL,
        ts {real} NOT NULL
    )""",
    "CREATE INDEX review_decisions_item ON review_decisions (item_id, ts)",
    # a primary's shadows, shown beside it on the review page
    "CREATE INDEX interactions_parent ON interactions (parent_id) WHERE parent_id IS NOT NULL",
]

# the experiment analysis: columns the writer reads out of each record (so the analysis aggregates in SQL
# without parsing JSON), its index, and the rollouts' state (one row per route) and audit trail
_EXPERIMENTS = [
    "ALTER TABLE interactions ADD COLUMN unit TEXT",
    "ALTER TABLE interactions ADD COLUMN tokens {real}",
    "ALTER TABLE interactions ADD COLUMN similarity {real}",
    "ALTER TABLE feedback ADD COLUMN task_completed INTEGER",
    "CREATE INDEX interactions_experiment ON interactions (route, experiment, role, ts)",
    "CREATE INDEX interactions_shadow ON interactions (route, upstream, role, ts)",
    """CREATE TABLE rollout_state (
        route TEXT PRIMARY KEY,
        plan TEXT NOT NULL,
        phase TEXT NOT NULL,
        step INTEGER NOT NULL,
        since {real} NOT NULL,
        started_at {real} NOT NULL,
        resume TEXT NOT NULL,
        reason TEXT NOT NULL,
        updated_at {real} NOT NULL
    )""",
    """CREATE TABLE rollout_audit (
        id {serial},
        route TEXT NOT NULL,
        ts {real} NOT NULL,
        actor TEXT NOT NULL,
        from_phase TEXT NOT NULL,
        from_percent INTEGER,
        to_phase TEXT NOT NULL,
        to_percent INTEGER,
        reason TEXT NOT NULL,
        figures TEXT NOT NULL
    )""",
    "CREATE INDEX rollout_audit_route ON rollout_audit (route, ts)",
]

# each dataset version written (the files are the truth; this row lets every replica export its metrics)
_DATASETS = """CREATE TABLE dataset_versions (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    created_at {real} NOT NULL,
    examples INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    parent TEXT,
    PRIMARY KEY (name, version)
)"""

# a drift check closes its window when it published, or when the reference had too few interactions (nothing
# before it to compare with: the next window's reference is this one)
_DRIFT_CLOSED = [
    "ALTER TABLE drift_checks ADD COLUMN closed INTEGER NOT NULL DEFAULT 0",
    "UPDATE drift_checks SET closed = published",
]

_UNITS = "UPDATE interactions SET unit = request_id WHERE unit IS NULL"

# who sent it (a named client), its tags, and what it cost: columns the writer reads out of each record, so
# export filters and cost sums run in SQL
_ATTRIBUTION = [
    "ALTER TABLE interactions ADD COLUMN client TEXT",
    "ALTER TABLE interactions ADD COLUMN tags TEXT",
    "ALTER TABLE interactions ADD COLUMN cost_usd {real}",
    "CREATE INDEX interactions_client_ts ON interactions (client, ts) WHERE client IS NOT NULL",
]

# review items per (route, status), kept by triggers in the same transaction as each insert or status change,
# so the page and every replica's review_backlog read a few rows instead of counting the queue
_REVIEW_COUNTS = """CREATE TABLE review_counts (
    route TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (route, status)
)"""
_REVIEW_COUNTS_FILL = (
    "INSERT INTO review_counts (route, status, n) "
    "SELECT route, status, COUNT(*) FROM review_items GROUP BY route, status"
)
_COUNT_UP = (
    "INSERT INTO review_counts (route, status, n) VALUES (NEW.route, NEW.status, 1) "
    "ON CONFLICT (route, status) DO UPDATE SET n = review_counts.n + 1;"
)
_COUNT_DOWN = "UPDATE review_counts SET n = n - 1 WHERE route = OLD.route AND status = OLD.status;"
_SQLITE_REVIEW_COUNTS = [
    _REVIEW_COUNTS,
    _REVIEW_COUNTS_FILL,
    f"CREATE TRIGGER review_items_insert AFTER INSERT ON review_items BEGIN {_COUNT_UP} END",
    f"CREATE TRIGGER review_items_delete AFTER DELETE ON review_items BEGIN {_COUNT_DOWN} END",
    "CREATE TRIGGER review_items_status AFTER UPDATE OF status ON review_items WHEN OLD.status <> NEW.status "
    f"BEGIN {_COUNT_DOWN} {_COUNT_UP} END",
]
_POSTGRES_REVIEW_COUNTS = [
    _REVIEW_COUNTS,
    _REVIEW_COUNTS_FILL,
    "CREATE FUNCTION review_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"IF TG_OP IN ('UPDATE', 'DELETE') THEN {_COUNT_DOWN} END IF; "
    f"IF TG_OP IN ('INSERT', 'UPDATE') THEN {_COUNT_UP} END IF; RETURN NULL; END $$",
    "CREATE TRIGGER review_items_counted AFTER INSERT OR DELETE ON review_items "
    "FOR EACH ROW EXECUTE FUNCTION review_count()",
    "CREATE TRIGGER review_items_status AFTER UPDATE OF status ON review_items "
    "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION review_count()",
]

_ADMIN_FEEDBACK = "CREATE INDEX feedback_admin ON feedback (request_id) WHERE caller = '*'"
_CALLER = ["ALTER TABLE interactions ADD COLUMN caller TEXT", "ALTER TABLE feedback ADD COLUMN caller TEXT"]

MIGRATIONS: list[tuple[int, str, dict[str, list[str]]]] = [
    (1, "interactions and feedback", {"sqlite": _SQLITE_V1, "postgres": _POSTGRES_V1}),
    (2, "job state and leases", {"sqlite": [_JOBS.format(real="REAL")], "postgres": [_JOBS.format(real="FLOAT8")]}),
    (
        3,
        "eval runs and results",
        {"sqlite": [q.format(real="REAL") for q in _EVALS], "postgres": [q.format(real="FLOAT8") for q in _EVALS]},
    ),
    (
        4,
        "drift checks and upstream models",
        {"sqlite": [t.format(real="REAL") for t in _DRIFT], "postgres": [t.format(real="FLOAT8") for t in _DRIFT]},
    ),
    (
        5,
        "review queue and decisions",
        {
            "sqlite": [x.format(real="REAL") for x in _REVIEW],
            "postgres": [x.format(real="DOUBLE PRECISION") for x in _REVIEW],
        },
    ),
    (
        6,
        "experiment columns, rollout state and audit",
        {
            "sqlite": [q.format(real="REAL", serial="INTEGER PRIMARY KEY") for q in _EXPERIMENTS],
            "postgres": [q.format(real="FLOAT8", serial="BIGSERIAL PRIMARY KEY") for q in _EXPERIMENTS],
        },
    ),
    (7, "dataset versions", {"sqlite": [_DATASETS.format(real="REAL")], "postgres": [_DATASETS.format(real="FLOAT8")]}),
    (8, "drift checks that close their window", {"sqlite": _DRIFT_CLOSED, "postgres": _DRIFT_CLOSED}),
    # rows stored before migration 6 (or by a loader of an older release) are each their own experiment unit
    (9, "experiment unit of older rows", {"sqlite": [_UNITS], "postgres": [_UNITS]}),
    (
        10,
        "client, tags and cost columns",
        {
            "sqlite": [q.format(real="REAL") for q in _ATTRIBUTION],
            "postgres": [q.format(real="DOUBLE PRECISION") for q in _ATTRIBUTION],
        },
    ),
    (11, "review counts", {"sqlite": _SQLITE_REVIEW_COUNTS, "postgres": _POSTGRES_REVIEW_COUNTS}),
    # who made a request and who gave feedback (a keyed hash, "*" for the admin key): feedback joins only its
    # own caller's interactions. Rows of earlier releases keep NULL: such feedback joins only such interactions.
    (12, "caller of interactions and feedback", {"sqlite": _CALLER, "postgres": _CALLER}),
    # the experiment report joins the admin key's feedback apart from each caller's own: without this index
    # PostgreSQL walked the whole request_id index to find the few admin rows (in every parallel worker)
    (13, "admin feedback", {"sqlite": [_ADMIN_FEEDBACK], "postgres": [_ADMIN_FEEDBACK]}),
]

LATEST = MIGRATIONS[-1][0]

TRACKING = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "applied_at REAL NOT NULL)",
    "postgres": "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "applied_at DOUBLE PRECISION NOT NULL)",
}
