"""refunddesk: refund and appeal intake against a written refund policy."""

__version__ = "0.1.0"
