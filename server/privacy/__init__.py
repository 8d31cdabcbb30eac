"""Privacy: retention and purge, crop encryption, subject requests, template counts."""
