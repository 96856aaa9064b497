"""The jobs collector's panels: the jobs board (energy per job, held-idle GPUs, the energy nobody held)."""

from __future__ import annotations

from agent.dashboards.model import FH, PH, RI, Panel, Query, Section, T

# each job's counters on each node: a job spans nodes, its energy is the sum over them
PER_JOB = 'GROUP BY "host", "job_id", "scheduler", "user"'

SECTIONS = (Section("jobs", 10, (
    Panel("GPU energy by job (window)", "table", [Query(
        f'SELECT sum("e") / 3600000 AS "kWh", sum("idle") / 3600 AS "held idle GPU h" FROM ('
        f'SELECT spread("gpu_energy_joules_total") AS "e", spread("held_idle_seconds_total") AS "idle" '
        f'FROM "job" {FH} AND "job_id" != \'idle\' {PER_JOB}) GROUP BY "job_id", "scheduler", "user"',
        table=True, promql=f'sum by (job_id, scheduler, user) (increase(aifactory_job_gpu_energy_joules_total'
                           f'{{{PH},job_id!="idle"}}[$__range])) / 3600000')], unit="none", decimals=3, w=12, h=10,
          description="each job's energy over the time range, summed over its nodes: the increase of its "
                      "counter (every joule of each GPU to one owner per window)"),
    Panel("Held-idle GPU hours (window)", "stat", [Query(
        f'SELECT sum("idle") / 3600 FROM (SELECT spread("held_idle_seconds_total") AS "idle" FROM "job" {FH} '
        f'{PER_JOB})', promql=f"sum(increase(aifactory_job_held_idle_seconds_total{{{PH}}}[$__range])) / 3600")],
          unit="h", decimals=2, w=6, h=5, thresholds=[(None, "green"), (1, "orange")],
          description="GPU time allocated to jobs that ran nothing on those GPUs"),
    Panel("Energy nobody held (window)", "stat", [Query(
        f'SELECT sum("e") / 3600000 FROM (SELECT spread("gpu_energy_joules_total") AS "e" FROM "job" {FH} '
        'AND "job_id" = \'idle\' GROUP BY "host")',
        promql=f'sum(increase(aifactory_job_gpu_energy_joules_total{{{PH},job_id="idle"}}[$__range])) / 3600000')],
          unit="kwatth", decimals=3, w=6, h=5,
          description="GPUs no job, pod, container or unit held or used: their energy is job_id idle"),
    Panel("GPU power by job", "timeseries", [Query(
        f'SELECT sum("p") FROM (SELECT non_negative_derivative(last("gpu_energy_joules_total"), 1s) AS "p" '
        f'FROM "job" {FH} {T}, "host", "job_id") WHERE $timeFilter {T}, "job_id" fill(none)',
        legend="$tag_job_id",
        promql=f"sum by (job_id) (rate(aifactory_job_gpu_energy_joules_total{{{PH}}}[{RI}]))")],
          unit="watt", w=24, stack=True,
          description="the rate of each job's energy counter, summed over its nodes"),
    Panel("Tokens per joule by job and model", "timeseries", [Query(
        f'SELECT last("tokens_per_joule") FROM "job_model" {FH} {T}, "job_id", "model" fill(none)',
        legend="$tag_job_id $tag_model", promql=f"aifactory_job_model_tokens_per_joule{{{PH}}}")],
          unit="short", decimals=3, w=12,
          description="each server and model on a job's GPUs: its tokens per joule of those GPUs' energy, since "
                      "the job first saw it"),
    Panel("GPUs held and idle, by job", "timeseries", [Query(
        f'SELECT max("held_idle_gpus") FROM "job" {FH} {T}, "host", "job_id" fill(none)',
        legend="$tag_host $tag_job_id", promql=f"max by (host, job_id) (aifactory_job_held_idle_gpus{{{PH}}})")],
          unit="none", w=12,
          description="JobHoldsIdleGpus fires after 10 minutes of it"),
)),)
