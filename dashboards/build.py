#!/usr/bin/env python3
"""Builds the Grafana dashboards (dashboards/*.json) from the compact panel lists below.

The JSON files are committed, so Grafana and the Rust tests never need Python; run this
after changing a panel:  python3 dashboards/build.py
scripts/test.sh runs  python3 dashboards/build.py --check  (renders in memory, writes nothing)
and fails when a committed file differs from what this script generates.

Conventions every panel follows (the stack-file test `dashboards_follow_the_conventions` in
tests/it/stack_files.rs checks the first three on the JSON; the end-to-end test in
tests/it/e2e.rs runs every expression against a real Prometheus scraping pgkpi):
- a `datasource` variable, and `target` (and where useful `datname`) variables;
- `$__rate_interval` in every rate()/increase();
- a unit and a description on every panel;
- thresholds taken from the KPI targets in alerts/kpi.yml, the same numbers the alerts use
  (KPI below reads them, so a missing target fails this script).
"""

import difflib
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KPI = {
    m.group(1): float(m.group(2))
    for m in re.finditer(
        r"record: pgkpi_kpi:(\w+)\s+expr: vector\(([0-9.e+]+)\)",
        (HERE.parent / "alerts" / "kpi.yml").read_text(),
    )
}

T = 'target=~"$target"'
TD = 'target=~"$target", datname=~"$datname"'


def panel(title, exprs, unit, description, kind="timeseries", threshold=None, legend=None,
          width=12, height=8, min_zero=True, stack=False):
    """One panel. exprs: list of (expr, legend) or plain expr strings."""
    targets = []
    for i, e in enumerate(exprs):
        expr, leg = (e if isinstance(e, tuple) else (e, legend or ""))
        targets.append({"refId": chr(65 + i), "expr": expr, "legendFormat": leg,
                        "datasource": {"type": "prometheus", "uid": "${datasource}"}})
    steps = [{"color": "green", "value": None}]
    if threshold is not None:
        steps.append({"color": "red", "value": threshold})
    defaults = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if kind == "timeseries":
        defaults["custom"] = {
            "thresholdsStyle": {"mode": "line" if threshold is not None else "off"},
            "stacking": {"mode": "normal" if stack else "none"},
        }
        if min_zero:
            defaults["min"] = 0
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": targets,
        "_w": width,
        "_h": height,
    }
    if kind == "table":
        for t in targets:
            t["instant"] = True
            t["format"] = "table"
    return p


def seconds_on_right(p, ref_id="B"):
    """Shows one query of a panel in seconds on a right-hand axis, for a panel whose two
    series have different units (Grafana would otherwise draw both in the panel's unit)."""
    p["fieldConfig"]["overrides"].append({
        "matcher": {"id": "byFrameRefID", "options": ref_id},
        "properties": [{"id": "unit", "value": "s"},
                       {"id": "custom.axisPlacement", "value": "right"}],
    })
    return p


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def variables(datname=True, extra=()):
    ds = {"type": "prometheus", "uid": "${datasource}"}
    out = [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0},
        {"name": "target", "label": "Target", "type": "query", "datasource": ds,
         "query": {"query": "label_values(pg_up, target)", "refId": "target"},
         "definition": "label_values(pg_up, target)", "refresh": 2, "multi": True,
         "includeAll": True, "allValue": ".*", "current": {}, "hide": 0, "sort": 1},
    ]
    if datname:
        q = 'label_values(pg_stat_database_xact_commit_total{target=~"$target"}, datname)'
        out.append({"name": "datname", "label": "Database", "type": "query", "datasource": ds,
                    "query": {"query": q, "refId": "datname"}, "definition": q, "refresh": 2,
                    "multi": True, "includeAll": True, "allValue": ".*", "current": {},
                    "hide": 0, "sort": 1})
    out.extend(extra)
    return out


def dashboard(uid, title, description, panels, templating):
    laid, x, y, h_row, pid = [], 0, 0, 0, 1
    for p in panels:
        if p["type"] == "row":
            if x:
                y += h_row
            x, h_row = 0, 0
            p.update({"id": pid, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
            y += 1
        else:
            w, h = p.pop("_w"), p.pop("_h")
            if x + w > 24:
                x, y = 0, y + h_row
                h_row = 0
            p.update({"id": pid, "gridPos": {"h": h, "w": w, "x": x, "y": y}})
            x += w
            h_row = max(h_row, h)
        pid += 1
        laid.append(p)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["pgkpi", "postgresql"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "graphTooltip": 1,
        "links": [{"title": "pgkpi dashboards", "type": "dashboards", "tags": ["pgkpi"],
                   "asDropdown": True}],
        "annotations": {"list": []},
        "templating": {"list": templating},
        "panels": laid,
    }


RI = "$__rate_interval"

# ---------------------------------------------------------------------------------------------
# Shared panel definitions (used on the overview and on the area dashboards).

def p95_by_workload():
    return panel(
        "Statement latency p95 / p99 by workload",
        [(f'histogram_quantile(0.95, sum by (target, datname, workload, le) (rate(pg_statement_latency_seconds_bucket{{{TD}}}[{RI}])))',
          "p95 {{workload}} ({{datname}})"),
         (f'histogram_quantile(0.99, sum by (target, datname, workload, le) (rate(pg_statement_latency_seconds_bucket{{{TD}}}[{RI}])))',
          "p99 {{workload}} ({{datname}})"),
         (f'max by (target, datname, workload) (pg_statement_latency_window_seconds{{{TD}, quantile="0.95"}})',
          "p95 measured {{workload}} ({{datname}})"),
         (f'max by (target, datname, workload) (pg_statement_latency_window_seconds{{{TD}, quantile="0.99"}})',
          "p99 measured {{workload}} ({{datname}})")],
        "s",
        "Execution-time percentiles per workload. p95/p99: from the histogram, shaped by the "
        "durations the server logged when the log source is on (see the latency source panel), "
        "else estimated from pg_stat_statements deltas. p95/p99 measured: the exact percentiles "
        "of the logged durations over pgkpi's window (statements.log.window), per target and "
        "database only. See docs/statements.md. The red line is the KPI target "
        "(alerts/kpi.yml, 20 ms by default).",
        threshold=KPI["statement_p95_target_seconds"])


def qps_and_lock_waits():
    return panel(
        "QPS and lock-wait seconds per second",
        [(f'sum by (target, datname) (rate(pg_stat_statements_all_calls_total{{{TD}}}[{RI}]))', "statements/s {{datname}}"),
         (f'sum by (target, datname) (rate(pg_lock_wait_seconds_total{{{TD}}}[{RI}]))', "sessions waiting on locks {{datname}}")],
        "short",
        "Statements executed per second next to the average number of sessions waiting on a "
        "lock (rate of pg_lock_wait_seconds_total). The seed KPI: QPS grows without lock waits growing.")


def cache_hit():
    return panel(
        "Cache hit ratio",
        [(f'sum by (target, datname) (rate(pg_stat_database_blks_hit_total{{{TD}}}[{RI}])) / '
          f'(sum by (target, datname) (rate(pg_stat_database_blks_hit_total{{{TD}}}[{RI}])) + '
          f'sum by (target, datname) (rate(pg_stat_database_blks_read_total{{{TD}}}[{RI}])))', "{{datname}}")],
        "percentunit",
        "Share of block reads served from shared buffers. Below the KPI line (90%) the working "
        "set no longer fits memory or queries scan too much.",
        threshold=KPI["cache_hit_ratio_min"], min_zero=False)


def connections():
    return panel(
        "Connections used / usable",
        [(f'pg_connections_used{{{T}}} / clamp_min(pg_connections_max{{{T}}} - pg_connections_superuser_reserved{{{T}}}, 1)', "{{target}}")],
        "percentunit",
        "Client sessions over max_connections minus the superuser reserve. The red line is the "
        "alert threshold; past 100% connections are refused.",
        threshold=KPI["connections_used_ratio_max"])


def database_growth():
    return panel(
        "Database size growth per day",
        [(f'deriv(pg_database_size_bytes{{{TD}}}[1h]) * 86400', "{{datname}}")],
        "bytes",
        "Growth rate of each database (deriv over the last hour, scaled to a day). Sizes are "
        "sampled every minute by the database_size collector.", min_zero=False)


def lock_panels():
    return [
        panel("Blocked sessions and root blockers",
              [(f'pg_blocking_blocked_sessions{{{T}}}', "blocked {{target}}"),
               (f'pg_blocking_root_blockers{{{T}}}', "root blockers {{target}}"),
               (f'pg_blocking_max_depth{{{T}}}', "max chain depth {{target}}")],
              "short", "From pg_blocking_pids(): sessions waiting behind another session, sessions "
              "at the root of a blocking tree, and the longest chain. Any value above 0 for long is "
              "what PostgresLockWaits pages on."),
        panel("Oldest lock wait",
              [(f'pg_lock_oldest_wait_seconds{{{T}}}', "{{target}}")],
              "s", "How long the longest-waiting session has waited for a lock (pg_locks.waitstart). "
              "The red line is the paging threshold.", threshold=KPI["lock_wait_max_seconds"]),
    ]


def db_panels():
    return [
        panel("Transactions per second",
              [(f'sum by (target, datname) (rate(pg_stat_database_xact_commit_total{{{TD}}}[{RI}]))', "commits {{datname}}"),
               (f'sum by (target, datname) (rate(pg_stat_database_xact_rollback_total{{{TD}}}[{RI}]))', "rollbacks {{datname}}")],
              "ops", "Commits and rollbacks per second (pg_stat_database)."),
        panel("Sessions by state",
              [(f'sum by (target, state) (pg_stat_activity_sessions{{{T}}})', "{{state}}")],
              "short", "Client sessions by state. Many 'idle in transaction' sessions hold locks; "
              "many 'idle' ones mean oversized client pools.", stack=True),
        panel("Oldest transaction, idle-in-transaction and query",
              [(f'pg_oldest_transaction_age_seconds{{{T}}}', "transaction {{target}}"),
               (f'pg_oldest_idle_in_transaction_seconds{{{T}}}', "idle in transaction {{target}}"),
               (f'pg_oldest_query_age_seconds{{{T}}}', "query {{target}}")],
              "s", "Ages of the oldest open transaction, idle-in-transaction session and running "
              "query (pgkpi's own sessions excluded). Long transactions hold back vacuum.",
              threshold=KPI["long_transaction_max_seconds"]),
        panel("Temporary files written",
              [(f'sum by (target, datname) (rate(pg_stat_database_temp_bytes_total{{{TD}}}[{RI}]))', "{{datname}}")],
              "Bps", "Bytes per second spilled to temporary files by sorts and hashes exceeding work_mem."),
        panel("Deadlocks",
              [(f'sum by (target, datname) (increase(pg_stat_database_deadlocks_total{{{TD}}}[{RI}]))', "{{datname}}")],
              "short", "Deadlocks detected per interval; each cancelled a transaction. PostgreSQL "
              "does not count lock_timeout errors separately."),
    ]


def queue_kpis():
    return [
        panel("Queue drain time",
              [(f'sum without (state) (app_queue_depth{{{T}, state="ready"}}) / '
                f'clamp_min(rate(app_queue_processed_total{{{T}}}[{RI}]), 1e-9)', "{{queue}}")],
              "s", "Ready items divided by the processing rate: how long the queue would take to "
              "empty at the current pace (the seed KPI 'tiempo de vaciado de cola'; recording rule "
              "app_queue:drain_seconds)."),
        panel("Queue lag (oldest ready item)",
              [(f'app_queue_lag_seconds{{{T}}}', "{{queue}}")],
              "s", "Age of the oldest item ready to be processed; bounded while consumers keep up.",
              threshold=KPI["queue_lag_max_seconds"]),
        panel("Webhook retry success rate",
              [(f'app_webhook_retry_success_ratio{{{T}}}', "retries {{target}}"),
               (f'app_webhook_first_attempt_success_ratio{{{T}}}', "first attempts {{target}}")],
              "percentunit", "Share of retried webhook deliveries (and of first attempts) that ended "
              "delivered over the configured window (the seed KPI 'tasa de retries exitosos').",
              threshold=KPI["webhook_retry_success_min"], min_zero=False),
    ]


# ---------------------------------------------------------------------------------------------

def queues():
    Q = 'target=~"$target", queue=~"$queue"'
    extra = [{"name": "queue", "label": "Queue", "type": "query",
              "datasource": {"type": "prometheus", "uid": "${datasource}"},
              "query": {"query": 'label_values(app_queue_depth{target=~"$target"}, queue)', "refId": "queue"},
              "definition": 'label_values(app_queue_depth{target=~"$target"}, queue)',
              "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "hide": 0}]
    panels = [
        row("Queues"),
        *queue_kpis()[:2],
        panel("Depth by state",
              [(f'app_queue_depth{{{Q}}}', "{{queue}} {{state}}")],
              "short", "Items per state (ready, scheduled, leased, dead, done). Counts over large "
              "tables may be planner estimates (app_queue_depth_estimated = 1) to avoid scans.",
              stack=True),
        panel("Inserted and processed per second",
              [(f'rate(app_queue_inserted_total{{{Q}}}[{RI}])', "inserted {{queue}}"),
               (f'rate(app_queue_processed_total{{{Q}}}[{RI}])', "processed {{queue}}")],
              "ops", "Producer and consumer throughput. Processed below inserted for long means "
              "the backlog grows."),
        panel("Expired leases and oldest lease",
              [(f'app_queue_expired_leases{{{Q}}}', "expired {{queue}}"),
               (f'app_queue_oldest_lease_seconds{{{Q}}}', "oldest lease age (s) {{queue}}")],
              "short", "Leases held past their timeout (a dead worker), and how long the oldest "
              "current lease has been held, in seconds."),
        panel("Pending items by retry count",
              [(f'sum by (queue, le) (app_queue_retries_bucket{{{Q}}})', "≤ {{le}} retries {{queue}}")],
              "short", "Cumulative distribution of retry_count over pending items: a fat tail "
              "means items bounce between failure and retry."),
        row("Webhooks"),
        queue_kpis()[2],
        panel("Deliveries by status",
              [(f'app_webhook_deliveries{{{T}}}', "{{status}}")],
              "short", "Webhook deliveries created in the collector's window (default 1 h), per "
              "status.", stack=True),
        panel("Pending and overdue retries",
              [(f'app_webhook_retries_pending{{{T}}}', "pending {{target}}"),
               (f'app_webhook_retries_overdue{{{T}}}', "overdue {{target}}")],
              "short", "Deliveries waiting for a retry, and those past their next retry time by "
              "more than the grace period (the retry worker is stalled)."),
        panel("Event log processing lag",
              [(f'app_webhook_event_lag_seconds{{{T}}}', "{{target}}")],
              "s", "Age of the oldest unprocessed webhook event log entry."),
        panel("Most failing webhooks",
              [(f'topk(5, app_webhook_failing_deliveries{{{T}}})', "webhook {{webhook_id}}")],
              "short", "Webhooks with the most failed deliveries in the window (top K, bounded).",
              kind="table"),
    ]
    return dashboard("pgkpi-queues", "pgkpi / Queues and webhooks",
                     "Application queues (depth, lag, leases, retries) and webhook delivery KPIs.",
                     panels, variables(datname=False, extra=extra))


def relations():
    panels = [
        row("Indexes"),
        panel("Unused indexes and reclaimable space",
              [(f'pg_index_unused_indexes{{{T}}}', "unused {{target}}"),
               (f'pg_index_invalid_indexes{{{T}}}', "invalid {{target}}"),
               (f'pg_index_duplicate_indexes{{{T}}}', "duplicate {{target}}")],
              "short", "Indexes never scanned since the statistics were reset (not backing a "
              "constraint, above the size floor), invalid indexes (a failed CREATE INDEX "
              "CONCURRENTLY) and exact duplicates. Judge 'unused' against the statistics age."),
        seconds_on_right(panel(
              "Reclaimable bytes and statistics age",
              [(f'pg_index_unused_reclaimable_bytes{{{T}}}', "reclaimable {{target}}"),
               (f'pg_index_usage_stats_age_seconds{{{T}}}', "statistics age {{target}}")],
              "bytes", "Total size of the unused indexes: what dropping them would give back. "
              "On the right axis, pg_index_usage_stats_age_seconds says how long the 'unused' "
              "verdict has been observed (a reset yesterday proves little).")),
        panel("Unused indexes",
              [(f'pg_index_unused_size_bytes{{{T}}}', "{{schemaname}}.{{indexrelname}}")],
              "bytes", "Each unused index with its size (bounded list).", kind="table"),
        panel("Index scans per second (busiest)",
              [(f'topk(10, rate(pg_index_scans_total{{{T}}}[{RI}]))', "{{schemaname}}.{{indexrelname}}")],
              "ops", "Index scans per second for the most used indexes: a new index from the "
              "migrations should show up here once the application uses it."),
        panel("Index bloat estimate (largest)",
              [(f'topk(10, pg_index_bloat_bytes{{{T}}})', "{{schemaname}}.{{indexrelname}}")],
              "bytes", "Catalog-based estimate of B-tree index space beyond what its entries "
              "need (docs/relations.md); reads low on deduplicated indexes."),
        row("Tables"),
        panel("Rows read by sequential scans (the missing-index signal)",
              [(f'topk(10, rate(pg_table_seq_tup_read_total{{{T}}}[{RI}]))', "{{schemaname}}.{{relname}}")],
              "short", "Rows per second read by sequential scans per table. Large numbers on a "
              "big table usually mean a query lacks an index."),
        panel("Sequential vs index scans",
              [(f'sum by (target) (rate(pg_table_seq_scans_total{{{T}}}[{RI}]))', "sequential {{target}}"),
               (f'sum by (target) (rate(pg_table_idx_scans_total{{{T}}}[{RI}]))', "index {{target}}")],
              "ops", "Scans per second over all tables, by kind."),
        panel("Largest tables",
              [(f'topk(10, pg_table_size_bytes{{{T}}})', "{{schemaname}}.{{relname}}")],
              "bytes", "Total size (heap, TOAST and indexes) of the largest tables; sampled every "
              "5 minutes by relation_sizes."),
        panel("Table growth per day (fastest)",
              [(f'topk(10, deriv(pg_table_size_bytes{{{T}}}[1h]) * 86400)', "{{schemaname}}.{{relname}}")],
              "bytes", "Growth per day of the fastest-growing tables (deriv over an hour).",
              min_zero=False),
        panel("Table bloat estimate (largest)",
              [(f'topk(10, pg_table_bloat_bytes{{{T}}})', "{{schemaname}}.{{relname}}")],
              "bytes", "Catalog-based estimate of heap space beyond what live rows need at the "
              "table's fillfactor (docs/relations.md)."),
        row("Partitions"),
        panel("Future partition coverage",
              [(f'pg_partitioned_table_coverage_seconds{{{T}, strategy="range"}}', "{{schemaname}}.{{relname}}")],
              "s", "Time until the newest partition's upper bound: below the line (7 days), "
              "run the partition maintenance job before rows fall into DEFAULT.",
              threshold=KPI["partition_coverage_min_seconds"]),
        panel("Oldest partition age",
              [(f'pg_partitioned_table_oldest_partition_age_seconds{{{T}}}', "{{schemaname}}.{{relname}}")],
              "s", "Age of the oldest partition's lower bound: with retention applied it stays "
              "near the policy (90 days raw)."),
        panel("Rows in DEFAULT partitions",
              [(f'pg_partitioned_table_default_rows{{{T}}}', "{{schemaname}}.{{relname}}")],
              "short", "Rows that matched no partition's range. Should stay 0."),
        panel("Partitioned table sizes",
              [(f'pg_partitioned_table_size_bytes{{{T}}}', "{{schemaname}}.{{relname}}")],
              "bytes", "Size of each partitioned table, all partitions rolled up to the root."),
    ]
    return dashboard("pgkpi-relations", "pgkpi / Indexes, tables and partitions",
                     "Whether the optimization plan is applied and working: index use, scans, "
                     "sizes, bloat and partition coverage.", panels, variables(datname=False))


def overview():
    panels = [
        row("Query latency and throughput"),
        p95_by_workload(),
        qps_and_lock_waits(),
        row("Async work"),
        *queue_kpis(),
        row("Database health"),
        cache_hit(),
        connections(),
        row("Growth"),
        database_growth(),
        panel("Partitioned table size growth per day",
              [(f'deriv(pg_partitioned_table_size_bytes{{{T}}}[1h]) * 86400', "{{parent}}")],
              "bytes", "Growth of each partitioned table (all partitions rolled up to the root); "
              "with retention applied it levels off.", min_zero=False),
    ]
    return dashboard("pgkpi-overview", "pgkpi / KPI overview",
                     "The seed documents' KPIs against their targets.", panels, variables())


def query_performance():
    extra = [{"name": "workload", "label": "Workload", "type": "query",
              "datasource": {"type": "prometheus", "uid": "${datasource}"},
              "query": {"query": 'label_values(pg_statement_latency_seconds_count{target=~"$target"}, workload)', "refId": "workload"},
              "definition": 'label_values(pg_statement_latency_seconds_count{target=~"$target"}, workload)',
              "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "hide": 0}]
    W = 'target=~"$target", datname=~"$datname", workload=~"$workload"'
    panels = [
        row("Latency"),
        p95_by_workload(),
        panel("Median latency by workload",
              [(f'histogram_quantile(0.5, sum by (target, datname, workload, le) (rate(pg_statement_latency_seconds_bucket{{{W}}}[{RI}])))', "{{workload}} ({{datname}})"),
               (f'max by (target, datname, workload) (pg_statement_latency_window_seconds{{{W}, quantile="0.5"}})', "measured {{workload}} ({{datname}})")],
              "s", "Median execution time per workload: from the histogram, and measured (the "
              "exact median of the durations the server logged over pgkpi's window, with the log "
              "source on)."),
        panel("Latency source",
              [(f'max by (target, datname, workload) (pg_statement_latency_source{{{W}, source="log"}})', "from the log {{workload}} ({{datname}})"),
               (f'max by (target, datname, workload) (pg_statement_latency_interval_samples{{{W}}})', "logged durations per interval {{workload}} ({{datname}})")],
              "short", "1 when the server log's sampled durations shaped the workload's histogram in "
              "its last interval (0: estimated from pg_stat_statements), and how many durations "
              "that interval had. pg_statement_log_source_status says why the log is not used."),
        panel("Mean latency by workload",
              [(f'sum by (target, datname, workload) (rate(pg_statement_latency_seconds_sum{{{W}}}[{RI}])) / '
                f'sum by (target, datname, workload) (rate(pg_statement_latency_seconds_count{{{W}}}[{RI}]))', "{{workload}} ({{datname}})")],
              "s", "Exact mean execution time per workload (no estimation: total time / calls)."),
        panel("Calls per second by workload",
              [(f'sum by (target, datname, workload) (rate(pg_statement_latency_seconds_count{{{W}}}[{RI}]))', "{{workload}} ({{datname}})")],
              "ops", "Statement executions per second per workload."),
        panel("Slow executions per second",
              [(f'sum by (target, datname, workload) (rate(pg_statement_slow_calls_total{{{W}}}[{RI}]))', "{{workload}} ({{datname}})")],
              "ops", "Executions slower than statements.slow_threshold, estimated from the same "
              "distribution as the histogram."),
        row("Top statements"),
        panel("Top statements by execution time",
              [(f'topk(10, sum by (target, datname, queryid) (rate(pg_stat_statements_exec_seconds_total{{{TD}}}[{RI}])))', "{{queryid}} ({{datname}})")],
              "s", "Seconds of execution per second for the 10 statements using the most time "
              "(top statements of each interval; text via pg_stat_statements_query_info when enabled)."),
        panel("Top statements by rows",
              [(f'topk(10, sum by (target, datname, queryid) (rate(pg_stat_statements_rows_total{{{TD}}}[{RI}])))', "{{queryid}} ({{datname}})")],
              "short", "Rows returned or affected per second by the busiest statements."),
        panel("Shared blocks read from disk by statement",
              [(f'topk(10, sum by (target, datname, queryid) (rate(pg_stat_statements_shared_blks_read_total{{{TD}}}[{RI}])))', "{{queryid}} ({{datname}})")],
              "short", "Blocks per second read outside shared buffers: the statements behind a low cache hit ratio."),
        panel("I/O time of all statements",
              [(f'sum by (target, datname) (rate(pg_stat_statements_all_io_read_seconds_total{{{TD}}}[{RI}]))', "read {{datname}}"),
               (f'sum by (target, datname) (rate(pg_stat_statements_all_io_write_seconds_total{{{TD}}}[{RI}]))', "write {{datname}}")],
              "s", "Seconds per second spent reading/writing blocks by statements (needs track_io_timing)."),
        row("pg_stat_statements health"),
        panel("pg_stat_statements fill and evictions",
              [(f'pg_stat_statements_fill_ratio{{{T}}}', "fill {{target}}")],
              "percentunit", "Entries over pg_stat_statements.max. Near 100% entries are evicted "
              "(see PostgresStatementsDeallocated) and their statistics lost."),
        panel("Statements left out of the top N",
              [(f'pg_stat_statements_top_omitted{{{T}}}', "{{target}}")],
              "short", "Statements active in the last interval that were not exported per "
              "statement (beyond statements.top_n); they still count in the histograms and totals."),
    ]
    return dashboard("pgkpi-queries", "pgkpi / Query performance",
                     "Latency distributions by workload and top statements from pg_stat_statements.",
                     panels, variables(extra=extra))


def locks():
    panels = [
        row("Blocking"),
        *lock_panels(),
        panel("Root blockers",
              [(f'pg_blocking_root_info{{{T}}} * on (target, blocker_pid) group_left () pg_blocking_root_xact_age_seconds{{{T}}}',
                "pid {{blocker_pid}} {{state}} {{application_name}} {{usename}}")],
              "s", "Top root blockers with their state, application and user; the value is the "
              "blocker's transaction age. pgkpi's /debug/locks shows the full tree.",
              kind="table", width=24),
        row("Waits"),
        qps_and_lock_waits(),
        panel("Average active sessions by wait event type",
              [(f'sum by (target, wait_event_type) (rate(pg_active_sessions_sampled_total{{{T}}}[{RI}])) / on (target) group_left () '
                f'clamp_min(sum by (target) (rate(pg_activity_samples_total{{{T}}}[{RI}])), 1e-9)', "{{wait_event_type}}")],
              "short", "Sampled every second: average number of active sessions, split by what they "
              "wait on (CPU = not waiting). The 'performance insights' view.", stack=True),
        panel("Locks by mode",
              [(f'sum by (target, mode, granted) (pg_locks_count{{{T}}})', "{{mode}} granted={{granted}}")],
              "short", "Heavyweight locks held (granted=true) and awaited (false) by mode."),
        *[p for p in db_panels() if p["title"] == "Deadlocks"],
    ]
    return dashboard("pgkpi-locks", "pgkpi / Locks and waits",
                     "Who is blocked, by whom, for how long; what active sessions wait on.",
                     panels, variables())


def pooling_panels():
    """pgBouncer targets (kind = "pgbouncer"): read next to the database's own connections."""
    pool = f'{T}, database!="pgbouncer"'
    return [
        panel("Pool clients waiting for a server",
              [(f'sum by (target, database, user) (pgbouncer_pool_client_connections{{{pool}, state="waiting"}})',
                "{{database}}/{{user}}")],
              "short", "Clients queued in pgBouncer for a server connection, per pool. Any "
              "lasting queue adds its wait to every query; see the longest wait beside it.",
              width=8),
        panel("Longest client wait per pool",
              [(f'pgbouncer_pool_max_wait_seconds{{{pool}}}', "{{database}}/{{user}}")],
              "s", "How long the oldest waiting client of each pool has waited. The red line is "
              "the PgbouncerClientsWaiting threshold.",
              threshold=KPI["pool_wait_max_seconds"], width=8),
        panel("Wait share of transaction time",
              [(f'rate(pgbouncer_client_wait_seconds_total{{{pool}}}[{RI}]) / '
                f'clamp_min(rate(pgbouncer_transaction_seconds_total{{{pool}}}[{RI}]), 1e-9)',
                "{{database}}")],
              "percentunit", "Share of the time clients spent in transactions through pgBouncer "
              "that was queueing for a server (pgBouncer 1.18 counts the wait inside the "
              "transaction time). Near 0 the pool is large enough.", width=8),
        panel("Server utilization per pool",
              [(f'max without (state) (pgbouncer_pool_server_connections{{{pool}, state="active"}}) '
                f'/ on (instance, job, target, database) group_left () '
                f'clamp_min(pgbouncer_database_pool_size{{{pool}}}, 1)', "{{database}}/{{user}}")],
              "percentunit", "Active server connections of each pool over its pool size. At "
              "100% with clients waiting the pool is saturated (PgbouncerPoolSaturated).",
              threshold=1),
        panel("Pooler client connections / max_client_conn",
              [(f'pgbouncer_client_connections{{{T}}} / pgbouncer_config_max_client_conn{{{T}}}',
                "{{target}}")],
              "percentunit", "Client connections pgBouncer holds over max_client_conn; past "
              "100% it refuses new clients.",
              threshold=KPI["pooler_client_conn_ratio_max"]),
    ]


def health():
    panels = [
        row("Activity"),
        *db_panels(),
        connections(),
        cache_hit(),
        row("Connection pooling (pgBouncer)"),
        *pooling_panels(),
        row("Disk and backups"),
        panel("Free space of the data and WAL file systems",
              [(f'pg_data_volume_free_bytes{{{T}}} / pg_data_volume_size_bytes{{{T}}}',
                "{{target}} {{directory}}")],
              "percentunit", "Share of each file system left (df's Avail over its size), when "
              "pgkpi sees the data directory. The red line is PostgresVolumeLowFree's threshold.",
              threshold=KPI["volume_free_ratio_min"]),
        panel("Newest full backup age",
              [(f'pg_backup_newest_age_seconds{{{T}}}', "{{target}}")],
              "s", "Age of the newest file in [backups] directory. The red line is "
              "PostgresBackupMissing's 26 h.",
              threshold=KPI["backup_age_max_seconds"]),
        row("Replication"),
        panel("Replication lag (time)",
              [(f'pg_replication_replay_lag_seconds{{{T}}}', "replay {{application_name}}"),
               (f'pg_standby_replay_lag_seconds{{{T}}}', "standby {{target}}")],
              "s", "Replay lag of each standby as seen from the primary, and on standbys the age "
              "of the last replayed transaction while WAL awaits replay.",
              threshold=KPI["replication_lag_max_seconds"]),
        panel("Replication lag (bytes) and slots",
              [(f'pg_replication_replay_lag_bytes{{{T}}}', "replay {{application_name}}"),
               (f'pg_replication_slot_retained_wal_bytes{{{T}}}', "slot {{slot_name}}")],
              "bytes", "WAL not yet replayed by each standby, and WAL retained by each "
              "replication slot (an inactive slot retains it forever).",
              threshold=KPI["slot_retained_wal_max_bytes"]),
        row("WAL, checkpoints and archiving"),
        panel("WAL generated",
              [(f'rate(pg_wal_position_bytes{{{T}}}[{RI}])', "{{target}}")],
              "Bps", "WAL bytes written per second (from the WAL position; works on every version)."),
        panel("Checkpoints",
              [(f'rate(pg_checkpoints_timed_total{{{T}}}[{RI}]) * 3600', "timed/h {{target}}"),
               (f'rate(pg_checkpoints_requested_total{{{T}}}[{RI}]) * 3600', "requested/h {{target}}")],
              "short", "Checkpoints per hour. Many requested ones mean max_wal_size is too small."),
        panel("WAL archiving",
              [(f'pg_stat_archiver_since_last_archived_seconds{{{T}}}', "since last archived {{target}}")],
              "s", "Seconds since the last WAL file was archived (absent when archiving never ran). "
              "Backups and PITR depend on it.", threshold=KPI["archive_age_max_seconds"]),
        panel("Archive failures",
              [(f'increase(pg_stat_archiver_failed_total{{{T}}}[{RI}])', "{{target}}")],
              "short", "Failed archive attempts per interval."),
        row("I/O by backend type (PostgreSQL 16+)"),
        panel("Bytes read and written",
              [(f'sum by (backend_type) (rate(pg_stat_io_read_bytes_total{{{T}}}[{RI}]))', "read {{backend_type}}"),
               (f'-sum by (backend_type) (rate(pg_stat_io_write_bytes_total{{{T}}}[{RI}]))', "written {{backend_type}}")],
              "Bps", "pg_stat_io, all objects and contexts: reads above the axis, writes below. "
              "Client backends that write are evicting dirty buffers themselves: the background "
              "writer or checkpointer is behind, or shared_buffers is too small."),
        panel("Buffer evictions and growth",
              [(f'sum by (backend_type) (rate(pg_stat_io_evictions_total{{{T}}}[{RI}]))', "evicted/s {{backend_type}}"),
               (f'sum by (backend_type) (rate(pg_stat_io_extend_bytes_total{{{T}}}[{RI}])) / 8192', "extended blocks/s {{backend_type}}")],
              "short", "Buffers evicted to make room (a working set larger than shared_buffers), "
              "and blocks added to relation files (tables and indexes growing)."),
        row("Vacuum and wraparound"),
        panel("Dead rows (worst tables)",
              [(f'topk(10, pg_table_dead_rows{{{T}}})', "{{schemaname}}.{{relname}}")],
              "short", "Dead rows awaiting vacuum in the tables with the most of them."),
        panel("Time since last vacuum (worst tables)",
              [(f'topk(10, pg_table_since_last_vacuum_seconds{{{T}}})', "{{schemaname}}.{{relname}}")],
              "s", "Seconds since each table was last vacuumed (manual or auto)."),
        panel("Autovacuum workers",
              [(f'pg_autovacuum_workers_running{{{T}}}', "running {{target}}"),
               (f'pg_autovacuum_workers_max{{{T}}}', "max {{target}}")],
              "short", "Autovacuum workers busy against autovacuum_max_workers; at the maximum for "
              "long, vacuum is not keeping up."),
        panel("Transaction ID wraparound",
              [(f'pg_database_xid_wraparound_ratio{{{TD}}}', "xid {{datname}}"),
               (f'pg_database_mxid_wraparound_ratio{{{TD}}}', "mxid {{datname}}")],
              "percentunit", "Share of the 2^31 ID space used since the oldest unfrozen row; writes "
              "stop at 100%.", threshold=KPI["xid_wraparound_ratio_max"]),
        panel("Sequences closest to exhaustion",
              [(f'topk(10, pg_sequence_used_ratio{{{T}}})', "{{schemaname}}.{{sequencename}}")],
              "percentunit", "Fraction of each sequence's usable range consumed, including the owning "
              "column's type limit (an int4 id fails at 2^31-1)."),
        row("Settings"),
        panel("Memory settings",
              [(f'pg_settings_bytes{{{T}, name=~"shared_buffers|work_mem|maintenance_work_mem|effective_cache_size|max_wal_size"}}', "{{name}}")],
              "bytes", "Selected memory settings in bytes.", kind="table", width=12),
        panel("Settings pending restart",
              [(f'pg_settings_pending_restart{{{T}}}', "{{target}}")],
              "short", "Settings changed in the configuration that wait for a server restart.",
              kind="stat", width=12),
    ]
    return dashboard("pgkpi-health", "pgkpi / Database health",
                     "Connections, replication, WAL and archiving, vacuum and wraparound.",
                     panels, variables())


def render():
    """Every dashboard file's name and its exact text, in memory."""
    boards = {
        "pgkpi-overview.json": overview(),
        "pgkpi-queries.json": query_performance(),
        "pgkpi-locks.json": locks(),
        "pgkpi-health.json": health(),
        "pgkpi-queues.json": queues(),
        "pgkpi-relations.json": relations(),
    }
    return {name: (board, json.dumps(board, indent=2) + "\n") for name, board in boards.items()}


def check(rendered):
    """Exit status 1, naming each file, when the committed JSON is not what this script makes.

    Hand edits to a JSON file, or a panel change committed without regenerating, would
    otherwise drift silently: the tests read the JSON, not this script."""
    problems = []
    for name, (_, text) in rendered.items():
        path = HERE / name
        committed = path.read_text() if path.exists() else None
        if committed is None:
            problems.append(f"{name}: missing")
        elif committed != text:
            diff = difflib.unified_diff(committed.splitlines(), text.splitlines(),
                                        f"committed {name}", f"generated {name}", lineterm="", n=1)
            lines = list(diff)
            shown = "\n".join("    " + line for line in lines[:12])
            more = f"\n    ... ({len(lines) - 12} more diff lines)" if len(lines) > 12 else ""
            problems.append(f"{name}: differs from what build.py generates\n{shown}{more}")
    for path in sorted(HERE.glob("*.json")):
        if path.name not in rendered:
            problems.append(f"{path.name}: not generated by build.py (add it there or delete it)")
    if problems:
        print("dashboards/ is out of date with dashboards/build.py:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        print("regenerate with:  python3 dashboards/build.py  (edit panels in build.py, not the JSON)",
              file=sys.stderr)
        return 1
    print(f"dashboards: {len(rendered)} files match dashboards/build.py")
    return 0


def main():
    rendered = render()
    if sys.argv[1:] == ["--check"]:
        sys.exit(check(rendered))
    if sys.argv[1:]:
        sys.exit(f"usage: {sys.argv[0]} [--check]")
    for name, (board, text) in rendered.items():
        (HERE / name).write_text(text)
        print(f"{name}: {sum(1 for p in board['panels'] if p['type'] != 'row')} panels")


if __name__ == "__main__":
    main()
