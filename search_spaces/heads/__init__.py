"""LRSSD detection heads and the joint backbone + head space (``lrssd``)."""
