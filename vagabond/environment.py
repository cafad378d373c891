"""Every environment variable vagabond reads, and what each does: the one list. The documentation's
reference page is generated from it, and a test keeps it in step with the names the code reads."""

from __future__ import annotations

from vagabond import timeouts

# vagabond's own.
VARIABLES: dict[str, str] = {
    "VAGABOND_BOXES": "A directory of box files, looked up before the project's boxes/ (as --boxes-dir).",
    "VAGABOND_CACHE": "Where base boxes, downloads and probe verdicts are cached (default ~/.cache/vagabond).",
    "VAGABOND_STATE": "Where the record of what vagabond created lives, for gc (default ~/.local/state/vagabond).",
    "VAGABOND_DRIVER": "kvm or qemu: overrides the driver decision, for vagabond and for the rendered Vagrantfile.",
    "VAGABOND_NETNS": "A network namespace VM-facing programs start in (scripts/sandbox.sh sets one up).",
    "VAGABOND_LOGS_ON_FAILURE": "Collect a failed up's or run's logs here (under CI: ./vagabond-logs).",
    "VAGABOND_DEBUG": "1: show commands as they run and tracebacks on errors (as --debug).",
    "VAGABOND_MITOGEN": "0: provision without Mitogen's strategy (plain Ansible, slower).",
    "VAGABOND_PROBE_KERNEL": "A kernel for the KVM smoke boot of driver detection.",
    "VAGABOND_SSH_KEY": "Set by vagabond up for the rendered Vagrantfile: the VM's own SSH key.",
    "VAGABOND_REGISTRY": "The OCI registry (host[:port]) VAGABOND_REGISTRY_PASSWORD is for; it is offered to no other.",
    "VAGABOND_REGISTRY_USERNAME": "The user name for an OCI registry (default: vagabond; a token needs none).",
    "VAGABOND_REGISTRY_PASSWORD": "A password or token for an OCI registry (GitHub Actions: the job's token).",
}


def _scaled(name: str) -> str:
    return f" Under software emulation, {timeouts.NON_KVM_COEF}x that." if name in timeouts.SCALED else ""


# Every timeout, by the name timeouts.py gives it: a slow host raises the one wait it needs.
VARIABLES |= {
    f"VAGABOND_TIMEOUT_{name}": f"Seconds to wait for {waits_for} (default {default:g}).{_scaled(name)}"
    for name, (default, waits_for) in timeouts.DOCUMENTED.items()
}

# Others' variables that vagabond honours.
OTHERS: dict[str, str] = {
    "XDG_CACHE_HOME, XDG_STATE_HOME": "The base of the cache and state directories when vagabond's own are unset.",
    "XDG_RUNTIME_DIR": "Where the shared SSH connections' sockets live (default: the temporary directory).",
    "VAGRANT_HOME": "Vagrant's home: its box store, which vagabond reads and adds to.",
    "LIBVIRT_DEFAULT_URI": "The libvirt connection (default qemu:///system).",
    "CI, GITHUB_ACTIONS": "Under CI: logs on failure, GitHub's log groups, annotations and step summary.",
    "GITHUB_STEP_SUMMARY, GITHUB_OUTPUT": "Where vagabond test and --github-output write in a GitHub job.",
    "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION": (
        "An s3:// catalog's endpoint and credentials (boto3's)."
    ),
    "REGISTRY_AUTH_FILE, DOCKER_CONFIG": "Where podman's and docker's registry credentials are (and their helpers).",
}
