"""Toll-fraud watch (pure): rules matched on the called number, sliding
counters with time passed in, warnings and blocks that explain themselves."""

from .counters import Alert, Block, Scope, Seen
from .rules import UNREADABLE, Level, Metric, Rule, RuleSet, Threshold, Window
from .watch import Cleared, FraudWatch, Match

__all__ = ["UNREADABLE", "Alert", "Block", "Cleared", "FraudWatch", "Level", "Match", "Metric",
           "Rule", "RuleSet", "Scope", "Seen", "Threshold", "Window"]
