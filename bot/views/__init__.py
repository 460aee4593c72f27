"""Pure Block Kit builders: functions from domain values to views and messages, no Slack calls."""
