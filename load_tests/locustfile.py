"""Locust load test for a deployed gateway: journal-sized texts to POST /v1/emotions.

    locust -f load_tests/locustfile.py --host http://127.0.0.1:8080
    locust -f load_tests/locustfile.py --host http://GATEWAY:8080 --headless -u 64 -r 8 -t 2m

Locust costs milliseconds of CPU per request: on a small box, drive it from another machine, or use
`samo bench emotion` (a light generator) for side-by-side numbers.
"""

import random

from locust import HttpUser, between, task

from load_tests.texts import journal_texts

TEXTS = journal_texts(512)


class JournalAppUser(HttpUser):
    """An app back end: mostly one entry at a time, sometimes a small batch."""

    wait_time = between(0.0, 0.05)

    @task(8)
    def one_entry(self) -> None:
        self.client.post("/v1/emotions", json={"texts": [random.choice(TEXTS)]}, name="/v1/emotions [1]")

    @task(1)
    def batch_of_entries(self) -> None:
        texts = random.sample(TEXTS, 8)
        self.client.post("/v1/emotions", json={"texts": texts, "top_k": 3}, name="/v1/emotions [8]")
