"""The base of every SAMO Python-backend model: `initialize` parsed once, requests read one by one,
the batch run once, and an error answered to the request that caused it.

A model subclasses `Backend` and implements three methods:
- `setup()`: load the model; `self.config`, `self.parameters`, `self.version_dir` are ready;
- `read(request)`: one request's inputs, checked (options through the gateway's own pydantic option
  models); a `ValueError` (pydantic's `ValidationError` is one), `TypeError` or `UnicodeDecodeError`
  answers that request alone with `bad request: ...`;
- `run(items)`: the whole dynamic batch in one go, one `pb_utils.InferenceResponse` per item.

When `run` fails on a batch of several requests, each request is run again alone, so a request that
breaks the model fails by itself and its batch neighbours still get their answers. A `ValueError`
from `run` is the request's fault (an option the model cannot honour) and is answered as a bad
request; anything else is logged here and answered with a message naming only the model, never the
exception text. Decoupled (streaming) models cannot be run again (tokens may already have gone out),
so there every request of a failed batch gets that message.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import triton_python_backend_utils as pb_utils

from samo.contracts.tensors import ModelContract
from samo.triton.devices import Instance

logger = logging.getLogger(__name__)

BAD_REQUEST = (ValueError, TypeError, UnicodeDecodeError)

SERVER_CHECK_S = 0.5
"""How often a stub checks that the tritonserver that started it is still its parent."""
_watching = threading.Event()


def _exit_with_server(server_pid: int) -> None:
    """Ends this stub process at once when its tritonserver is gone (the stub is then re-parented).

    The stub checks its parent itself, but its way out tears the interpreter down and was seen, on a
    loaded machine, to keep a stub alive for more than 30 s after `samo serve` and its server were
    killed (tests/test_supervision.py). Nothing is left to answer by then: `os._exit` frees the process's
    memory without waiting for anything.
    """
    while os.getppid() == server_pid:
        time.sleep(SERVER_CHECK_S)
    os._exit(1)


def watch_server() -> None:
    """Start `_exit_with_server` once per stub process (one stub serves one model instance)."""
    if not _watching.is_set():
        _watching.set()
        threading.Thread(
            target=_exit_with_server, args=(os.getppid(),), name="samo-exit-with-server", daemon=True
        ).start()


class Backend:
    """One Python-backend model; Triton calls `initialize`, `execute` and `finalize`."""

    contract: ClassVar[ModelContract | None] = None
    """When set, config.pbtxt must name exactly these inputs and outputs, in this order."""

    def initialize(self, args: dict[str, str]) -> None:
        self.args = args
        self.config = json.loads(args["model_config"])
        self.name = self.config.get("name") or args.get("model_name", "model")
        self.parameters = {
            key: value["string_value"] for key, value in self.config.get("parameters", {}).items()
        }
        self.input_names = tuple(tensor["name"] for tensor in self.config["input"])
        self.output_names = tuple(tensor["name"] for tensor in self.config["output"])
        if self.contract is not None:
            expected = (self.contract.input_names, self.contract.output_names)
            if (self.input_names, self.output_names) != expected:
                raise pb_utils.TritonModelException(
                    f"config.pbtxt of `{self.name}` has inputs {list(self.input_names)} and outputs "
                    f"{list(self.output_names)}; the contract says {list(expected[0])} and {list(expected[1])}"
                )
        self.model_dir = Path(args["model_repository"])
        self.version_dir = self.model_dir / args["model_version"]
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(self.config)
        # Where Triton put this instance; GPU instances check their device in `setup` (samo.triton.devices).
        self.instance = Instance.from_args(self.name, args)
        watch_server()
        self.setup()

    def instance_count(self) -> int:
        """Instances of this model in its instance groups (on one device)."""
        return max(1, sum(int(group.get("count", 1)) for group in self.config.get("instance_group", [])))

    def threads(self, name: str, default: str) -> int:
        """A thread-count parameter: a number, or `auto` for this instance's share of the cores the
        server may use (its affinity and cgroup quota), so one repository fits any node."""
        value = self.parameter(name, default)
        if value != "auto":
            return int(value)
        from samo.cpus import usable_cores

        return max(1, usable_cores() // self.instance_count())

    def parameter(self, name: str, default: str) -> str:
        return self.parameters.get(name) or default

    def setup(self) -> None:
        raise NotImplementedError

    def read(self, request: Any) -> Any:
        raise NotImplementedError

    def run(self, items: Sequence[Any], senders: Sequence[Any] | None = None) -> list[Any]:
        """Responses for `items`, in order. `senders` (decoupled models only) stream partial answers."""
        raise NotImplementedError

    def execute(self, requests: list[Any]) -> list[Any] | None:
        responses: list[Any] = [None] * len(requests)
        accepted = []
        for index, request in enumerate(requests):
            try:
                accepted.append((index, self.read(request)))
            except BAD_REQUEST as exc:
                responses[index] = error_response(f"bad request: {exc}")
        senders = [request.get_response_sender() for request in requests] if self.decoupled else None
        if accepted:
            self._answer(accepted, responses, senders)
        if senders is None:
            return responses
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for sender, response in zip(senders, responses, strict=True):
            sender.send(response, flags=final)
        return None

    def _answer(
        self, accepted: list[tuple[int, Any]], responses: list[Any], senders: list[Any] | None
    ) -> None:
        indices = [index for index, _ in accepted]
        try:
            streams = None if senders is None else [senders[index] for index in indices]
            answers = self.run([item for _, item in accepted], streams)
        except Exception as exc:
            if len(accepted) > 1 and senders is None:
                for one in accepted:  # find the request that fails; its neighbours still get answers
                    self._answer([one], responses, senders)
                return
            answers = [self._failure(exc)] * len(accepted)
        for index, answer in zip(indices, answers, strict=True):
            responses[index] = answer

    def _failure(self, exc: Exception) -> Any:
        if isinstance(exc, ValueError):
            return error_response(f"bad request: {exc}")
        logger.error("model `%s` failed on a request", self.name, exc_info=exc)
        return error_response(f"model `{self.name}` failed on this request; the server log has the details")

    def input(self, request: Any, name: str) -> np.ndarray:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise ValueError(f"input `{name}` is missing")
        return tensor.as_numpy()

    def response(self, outputs: dict[str, np.ndarray]) -> Any:
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, array) for name, array in outputs.items()]
        )

    def json_response(self, name: str, body: dict) -> Any:
        """One JSON document in a [1, 1] BYTES output."""
        return self.response({name: np.array([[json.dumps(body).encode()]], dtype=np.object_)})


def read_json_option(raw: np.ndarray) -> str:
    """The JSON text of a [1, 1] BYTES options input; empty when none was sent."""
    values = raw.reshape(-1)
    return values[0].decode() if values.size and isinstance(values[0], bytes) else ""


def error_response(message: str) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
