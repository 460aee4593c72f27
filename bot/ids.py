"""Every Block Kit block id, action id and callback id of the app, in one place."""

COMMAND = "/emailsync"

# Views (callback ids)
SETUP_VIEW = "setup"

# Blocks
B_CONNECT = "connect"
B_TRACKING = "tracking"
B_VISIBILITY = "visibility"
B_SYNC_MODE = "sync_mode"
B_FOLDERS = "folders"
B_START = "start"
B_SCOPE = "contact_scope"
B_PREVIEW = "preview"
B_NAV = "nav"

# Actions
A_CONNECT_LINK = "connect_link"
A_TRACKING = "tracking_choice"
A_VISIBILITY = "visibility_choice"
A_SYNC_MODE = "sync_mode_choice"
A_FOLDERS = "folders_choice"
A_FOLDERS_SEARCH = "folders_search"  # external select: answered from the cached folder list
A_START = "start_choice"
A_SCOPE = "scope_choice"
A_BACK = "setup_back"
A_CONTINUE_SETUP = "continue_setup"
A_HOME_SETUP = "home_setup"
