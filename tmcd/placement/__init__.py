"""Placement: choosing clusters for a Placement from the known SyncTargets."""

from tmcd.placement.model import CandidateResult, Decision, Reason, decide, to_message, to_status

__all__ = ["CandidateResult", "Decision", "Reason", "decide", "to_message", "to_status"]
