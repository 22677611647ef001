"""Editable dialogue templates of the describers (JSON); a package only so that they ship with the wheel."""
