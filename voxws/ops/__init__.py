"""voxws-ops: plan, render, validate, install and watch one systemd service per GPU group."""
