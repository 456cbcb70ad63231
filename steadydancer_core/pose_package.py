"""``pose``: the pose package beside ``steadydancer_core``, for the core's front-end modules (the option tables, the
CLI, the demo). Inside the node pack it is the pack's subpackage; when ``steadydancer_core`` is a top-level package
(an installed copy, or the repository root on ``sys.path``) it is the top-level ``pose``.
"""
try:
    from .. import pose  # noqa: F401  (inside the node pack)
except ImportError:      # steadydancer_core is top-level: "attempted relative import beyond top-level package"
    import pose  # noqa: F401

__all__ = ["pose"]
