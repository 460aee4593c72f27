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

# App Home (button values carry the account id; every handler reloads and checks the owner)
A_HOME_SYNC = "home_sync_now"
A_HOME_PAUSE = "home_pause"
A_HOME_RESUME = "home_resume"
A_HOME_EDIT = "home_edit"
A_HOME_WIDEN = "home_widen"
A_HOME_RECONNECT = "home_reconnect"
A_HOME_DISCONNECT = "home_disconnect"
A_HOME_GENERAL = "home_general"
A_HOME_DELETE_DATA = "home_delete_data"

# Modals opened from App Home
EDIT_VIEW = "edit_account"
WIDEN_VIEW = "widen_window"
DISCONNECT_VIEW = "disconnect_account"
GENERAL_VIEW = "general_settings"
B_KEEP_MAIL = "keep_mail"
A_KEEP_MAIL = "keep_mail_choice"
B_NOTIFY_LEVEL = "notification_level"
A_NOTIFY_LEVEL = "notification_level_choice"
B_BLOCKED = "blocked"
A_BLOCKED = "blocked_input"

# Find: /emailsync find, the message shortcut, result pages and the thread modal (ids in values are
# message ids or queries: every handler reruns the query or reloads the message as the clicker sees it)
SHORTCUT_FIND = "emails_with_person"
FIND_VIEW = "find_results"
THREAD_VIEW = "email_thread"
# Buttons that share a block get a suffix (Slack wants action ids unique in a block): find_page_older, …
A_FIND_PAGE = "find_page"
A_FIND_OPEN = "find_open_thread"
A_FIND_OTHER = "find_other_address"
A_THREAD_VISIBILITY = "thread_visibility"
A_THREAD_QUOTES = "thread_quotes"

# Contacts: App Home, the weekly "people who are not contacts yet" DM (values carry the digest id)
A_HOME_ADD_CONTACT = "home_add_contact"
A_HOME_IMPORT_CSV = "home_import_csv"
ADD_CONTACT_VIEW = "add_contact"
DIGEST_ADD_VIEW = "digest_add_contact"
B_CONTACT_EMAIL = "contact_email"
A_CONTACT_EMAIL = "contact_email_input"
B_CONTACT_NAME = "contact_name"
A_CONTACT_NAME = "contact_name_input"
A_DIGEST_ADD = "digest_add"
A_DIGEST_IGNORE = "digest_ignore"
B_DIGEST_DAY = "digest_day"
A_DIGEST_DAY = "digest_day_choice"
B_DIGEST_HOUR = "digest_hour"
A_DIGEST_HOUR = "digest_hour_choice"

# Send from Slack (DESIGN section 13): the compose modal and its inputs; the "Reply" button carries a
# message id (the handler reloads it as the clicker sees it).
SEND_VIEW = "send_email"
SHORTCUT_SEND = "send_email"  # global shortcut
SHORTCUT_SEND_MESSAGE = "send_by_email"  # message shortcut
A_REPLY = "reply_by_email"
B_SEND_FROM = "send_from"
A_SEND_FROM = "send_from_choice"
B_SEND_TO = "send_to"
A_SEND_TO = "send_to_choice"
B_SEND_CC = "send_cc"
A_SEND_CC = "send_cc_choice"
B_SEND_SUBJECT = "send_subject"
A_SEND_SUBJECT = "send_subject_input"
B_SEND_BODY = "send_body"
A_SEND_BODY = "send_body_input"
B_SEND_TRACKING = "send_tracking"
A_SEND_TRACKING = "send_tracking_choice"
