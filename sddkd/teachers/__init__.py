"""Teachers: reading checkpoints safely (`loading`), the verified store under `SDDKD_HOME` (`store`), and where
each dataset's teachers come from (`sources`: `sddkd fetch-teachers`). Arrows: sources -> store -> loading."""

from sddkd.teachers.loading import TeacherError, read_checkpoint
from sddkd.teachers.sources import fetch_teachers, missing_teacher_message
from sddkd.teachers.store import find_teacher, load_teacher, register_teacher, sddkd_home

__all__ = [
    "TeacherError", "fetch_teachers", "find_teacher", "load_teacher", "missing_teacher_message", "read_checkpoint",
    "register_teacher", "sddkd_home",
]  # fmt: skip
