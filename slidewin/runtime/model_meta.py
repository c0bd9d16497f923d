"""The model contract's old location, kept for users' code: it lives in `slidewin.core.contract`."""
from slidewin.core.contract import *  # noqa: F401,F403
from slidewin.io.hashing import sha256_of  # noqa: F401  (now in slidewin.io.hashing)
