"""Capacity advice: record what the adapter pool is asked for, replay it at other sizes."""
