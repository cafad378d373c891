"""The guest agent through virsh: a ping, a program run in the guest, and a guest that does not
answer or answers nonsense (a guest restored from elsewhere is not trusted)."""

from __future__ import annotations

import base64
import json

import pytest

from vagabond import process
from vagabond.errors import WarmError
from vagabond.host import guestagent, libvirt

DOMAIN = "vagabond-b-1234abcd-default"


@pytest.fixture
def agent(monkeypatch):
    """virsh qemu-agent-command as the guest's agent answers it: per request's "execute", the
    answers in turn (the last one again); None for an agent that does not answer. Records requests."""
    world = {"answers": {}, "asked": []}

    def run(*args, timeout=None):
        assert args[:2] == ("qemu-agent-command", DOMAIN) and args[3] == "--timeout", args
        request = json.loads(args[2])
        world["asked"].append(request)
        queue = world["answers"].get(request["execute"]) or [None]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if answer is None:
            return process.Result(["virsh", *args], 1, "", "error: Guest agent is not responding", 0.0)
        return process.Result(["virsh", *args], 0, answer, "", 0.0)

    monkeypatch.setattr(libvirt, "run", run)
    return world


def test_an_agent_that_answers_a_ping_answers(agent):
    agent["answers"]["guest-ping"] = ['{"return":{}}']
    assert guestagent.answers(DOMAIN, within=1)
    assert agent["asked"] == [{"execute": "guest-ping"}]


def test_a_guest_without_an_agent_does_not_answer_once_its_time_is_up(agent):
    assert not guestagent.answers(DOMAIN, within=0.2)
    assert len(agent["asked"]) >= 2, "asked again until its time was up"


def test_a_program_runs_with_its_input_and_gives_its_exit_code_and_stderr(agent):
    done = {"return": {"exited": True, "exitcode": 2, "err-data": base64.b64encode(b"bad key\n").decode()}}
    agent["answers"]["guest-exec"] = ['{"return":{"pid":319}}']
    agent["answers"]["guest-exec-status"] = ['{"return":{"exited":false}}'] * 2 + [json.dumps(done)]
    assert guestagent.run(DOMAIN, "/usr/local/libexec/x", ["rekey"], input="ssh-ed25519 AAAA k\n") == (2, "bad key\n")
    started, *polled = agent["asked"]
    assert started["arguments"]["path"] == "/usr/local/libexec/x" and started["arguments"]["arg"] == ["rekey"]
    assert base64.b64decode(started["arguments"]["input-data"]) == b"ssh-ed25519 AAAA k\n"
    assert [p["arguments"] for p in polled] == [{"pid": 319}] * 3


@pytest.mark.parametrize(
    "started, status, said",
    [
        (None, None, "did not run /x"),
        ("not json", None, "did not run /x"),
        ('{"return":{"pid":"1; rm -rf /"}}', None, "did not run /x"),
        ('{"return":{"pid":true}}', None, "did not run /x"),
        ('{"error":{"class":"GenericError","desc":"Command guest-exec has been disabled"}}', None, "did not run /x"),
        ('{"return":{"pid":7}}', '{"return":{"exited":false}}', "did not end within 0.2s"),
    ],
)
def test_an_agent_that_does_not_run_it_or_a_program_that_does_not_end_is_one_error(agent, started, status, said):
    agent["answers"]["guest-exec"] = [started]
    agent["answers"]["guest-exec-status"] = [status]
    with pytest.raises(WarmError, match=said):
        guestagent.run(DOMAIN, "/x", [], timeout=0.2)


def test_a_hostile_answer_gives_a_bounded_stderr_and_an_exit_code_of_its_own(agent):
    huge = base64.b64encode(b"x" * 100000).decode()
    agent["answers"]["guest-exec"] = ['{"return":{"pid":1}}']
    agent["answers"]["guest-exec-status"] = [
        json.dumps({"return": {"exited": True, "exitcode": "0", "err-data": huge}})
    ]
    code, stderr = guestagent.run(DOMAIN, "/x", [])
    assert code == -1 and len(stderr) == guestagent.OUTPUT_LIMIT
    agent["answers"]["guest-exec-status"] = ['{"return":{"exited":true,"exitcode":0,"err-data":"!!not base64"}}']
    assert guestagent.run(DOMAIN, "/x", []) == (0, "")
    agent["answers"]["guest-exec-status"] = ['{"return":{"exited":true,"exitcode":false}}']
    assert guestagent.run(DOMAIN, "/x", [])[0] == -1, "a JSON false is no exit code 0"


@pytest.mark.parametrize(
    "channel, connected",
    [
        (
            "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='connected'/></channel>",
            True,
        ),
        (
            "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='disconnected'/></channel>",
            False,
        ),
        ("<channel type='unix'><target type='virtio' name='org.other.0' state='connected'/></channel>", False),
        ("", False),
    ],
)
def test_a_domain_has_a_connected_agent_only_when_its_live_xml_says_so(monkeypatch, channel, connected):
    monkeypatch.setattr(libvirt, "domain_xml", lambda name: f"<domain><devices>{channel}</devices></domain>")
    assert guestagent.connected(DOMAIN) is connected


def test_a_program_started_now_is_waited_for_later_with_its_output(agent):
    """resume starts the agent's script, opens SSH meanwhile, then takes the script's stdout."""
    out, err = base64.b64encode(b"renewed\n").decode(), "%%%"  # an stderr that is no base64 reads as empty
    agent["answers"]["guest-exec"] = ['{"return":{"pid":7}}']
    agent["answers"]["guest-exec-status"] = [
        json.dumps({"return": {"exited": True, "exitcode": 0, "out-data": out, "err-data": err}})
    ]
    pid = guestagent.start(DOMAIN, "/bin/sh", ["-c", "x"], input="1.000\n")
    assert pid == 7 and [a["execute"] for a in agent["asked"]] == ["guest-exec"], "started, not waited for"
    assert guestagent.wait(DOMAIN, pid, "the script") == (0, "renewed\n", "")
