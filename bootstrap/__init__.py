"""The EMR bootstrap action (install.sh) and its pinned requirements, shipped as package data so that a
non-editable install of the launcher can still upload them."""
