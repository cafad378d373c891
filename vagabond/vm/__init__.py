"""One box's VM: its work directory, the rendered Vagrantfile, the lifecycle, provisioning, tests, logs, gc, ssh."""
