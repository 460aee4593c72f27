"""Slack-facing side of emailsync: listeners, views, web routes, CLI and the composition root."""
