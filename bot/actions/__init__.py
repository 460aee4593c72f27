"""Things the bot does in Slack on behalf of several listeners, the connect page or the notifier (no listeners here)."""
