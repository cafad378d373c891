"""An Ansible stdout callback for the tests: one JSON object with every task's result, by task name."""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "record"

    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[str, dict] = {}

    def _record(self, result, status: str) -> None:
        self.tasks[result._task.get_name()] = dict(result._result, vagabond_status=status)

    def v2_runner_on_ok(self, result) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result) -> None:
        self._record(result, "skipped")

    def v2_playbook_on_stats(self, stats) -> None:
        self._display.display(json.dumps({"tasks": self.tasks}, default=str))
