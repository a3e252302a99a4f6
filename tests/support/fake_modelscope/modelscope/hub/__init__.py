"""The part of modelscope.hub majicbot uses: the progress callback base class."""


class ProgressCallback:
    def __init__(self, filename: str, file_size: int) -> None:
        self.filename = filename
        self.file_size = file_size

    def update(self, size: int) -> None:
        pass

    def end(self) -> None:
        pass
