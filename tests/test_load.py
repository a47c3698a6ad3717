"""Load: 50 concurrent gradio_client requests mixed across the three model endpoints, against the app running in its
own process with tiny models (bench/load.py). All must be answered correctly, the queue must keep model runs at its
concurrency limit, the server's memory must stay bounded, and it must still answer afterwards.

About 15 s on two quiet CPU cores, 34 s on busy ones: out of the default run, in CI's second step
(`python3 -m pytest -q -m slow`); alone: `python3 -m pytest -q -m load`.
"""

from __future__ import annotations

import pytest

from bench import load

REQUESTS = 50
CONCURRENCY = 2
RSS_GROWTH_LIMIT_MB = 300  # tiny models and images: anything near this means requests are not being bounded


@pytest.mark.load
@pytest.mark.slow  # a server process and 50 requests: 34 s on a busy 2-core machine
def test_burst_of_concurrent_requests_is_answered_and_bounded(tmp_path):
    with load.tiny_server(tmp_path, concurrency=CONCURRENCY, queue_size=64) as server:
        report = load.run_load(server.url, requests=REQUESTS, pid=server.pid, concurrency=server.concurrency,
                               stats_file=server.stats_file, timeout_s=90, workdir=tmp_path)
    print(report.summary())  # shown with -s or on failure: the numbers for the README
    assert report.failures == [] and report.ok == REQUESTS
    assert report.still_serving
    assert 1 <= report.peak_in_flight <= CONCURRENCY
    assert report.rss_peak_mb < report.rss_before_mb + RSS_GROWTH_LIMIT_MB
