"""Exceptions raised for user-facing problems (bad files, mismatched fits)."""


class HierarchyError(Exception):
    """A problem the user can fix; the CLI prints the message and exits non-zero."""


class DataValidationError(HierarchyError):
    """A neighbourhood table broke one or more invariants; ``report`` lists them all."""

    def __init__(self, report):  # report: hierarchy.data.table.ValidationReport
        self.report = report
        super().__init__(report.format())


class SpecError(HierarchyError):
    """A model spec or prior set file is invalid."""


class FitFileError(HierarchyError):
    """A fit file is corrupt, incomplete, or does not match the files it is paired with."""
