"""Locust load shape: raise the request rate step by step until p99 breaks the SLO.

Run together with the Locust file (`samo loadtest --slo-p99-ms ...` does this):

    locust -f load_tests/locustfile.py,load_tests/locust_step_load.py --headless --host URL \
        --rate-per-user 1 --step-rate 5 --step-duration 20 --slo-p99-ms 500 --step-report steps.json

Step k offers k x `--step-rate` requests/s (rounded up to whole users): users each paced at
`--rate-per-user` requests/s by Locust's constant_throughput. The first `SETTLE_FRACTION` of each step (users arriving)
is not measured. The test stops after the first step that misses (see load_tests/locust_slo.py) or
after the step at `--step-max-rate`; `--step-report` gets every step's figures after each step.
"""

from __future__ import annotations

import math
import time
from typing import Any

from locust import LoadTestShape, events

from load_tests.locust_slo import StepResult, judge_step, write_steps

SETTLE_FRACTION = 0.25


@events.init_command_line_parser.add_listener
def add_step_arguments(parser: Any) -> None:
    parser.add_argument("--step-rate", type=float, default=5.0, help="Requests/s added at each step.")
    parser.add_argument("--step-duration", type=float, default=20.0, help="Seconds per step.")
    parser.add_argument("--step-max-rate", type=float, default=1000.0, help="Last step's requests/s.")
    parser.add_argument("--slo-p99-ms", type=float, default=1000.0, help="p99 latency objective, ms.")
    parser.add_argument("--step-report", default="", help="JSON file for the step results.")


class StepLoad(LoadTestShape):
    """Rising request-rate steps; stops at the first step that misses the SLO."""

    def __init__(self) -> None:
        super().__init__()
        self.results: list[StepResult] = []
        self._step = 0
        self._step_started = 0.0
        self._latencies: list[float] = []
        self._failures = 0
        self._listening = False

    def tick(self) -> tuple[int, float] | None:
        runner = self.runner
        # Locust sets the runner, with the command line's options, before the first tick.
        assert runner is not None and runner.environment.parsed_options is not None
        options = runner.environment.parsed_options
        if not self._listening:
            runner.environment.events.request.add_listener(self._on_request)
            self._listening = True
            # A step is a request rate only if users are paced (constant_throughput): 1 request/s each.
            options.rate_per_user = options.rate_per_user if options.rate_per_user > 0 else 1.0
        step = int(self.get_run_time() // options.step_duration) + 1
        if step != self._step:
            if self._step and not self._finish_step(options):
                return None
            self._start_step(step)
        users, rate = self._load(step, options)
        if rate > options.step_max_rate + 1e-9:
            return None
        return users, float(users)  # spawn within about a second: the step is the rate

    def _load(self, step: int, options: Any) -> tuple[int, float]:
        """Users for step k (k x --step-rate requests/s in whole users) and the rate they offer."""
        users = max(1, math.ceil(step * options.step_rate / options.rate_per_user - 1e-9))
        return users, round(users * options.rate_per_user, 6)

    def _start_step(self, step: int) -> None:
        self._step = step
        self._step_started = time.perf_counter()
        self._latencies = []
        self._failures = 0

    def _on_request(self, response_time: float, exception: BaseException | None, **_: Any) -> None:
        assert self.runner is not None and self.runner.environment.parsed_options is not None
        duration = self.runner.environment.parsed_options.step_duration
        if time.perf_counter() - self._step_started < SETTLE_FRACTION * duration:
            return
        self._latencies.append(response_time)
        self._failures += exception is not None

    def _finish_step(self, options: Any) -> bool:
        """Judges the step that just ended and writes the report; False stops the test."""
        measured_s = time.perf_counter() - self._step_started - SETTLE_FRACTION * options.step_duration
        users, rate = self._load(self._step, options)
        result = judge_step(
            self._step,
            rate,
            users,
            self._latencies,
            self._failures,
            measured_s,
            options.slo_p99_ms,
        )
        self.results.append(result)
        if options.step_report:
            write_steps(options.step_report, self.results, options.slo_p99_ms)
        return result.passed
