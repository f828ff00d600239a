"""The `vatic` command and the platform tooling it runs around the serving layer."""
