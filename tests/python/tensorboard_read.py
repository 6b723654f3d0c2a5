"""TensorBoard's own readers on moa's event files.

scalars mode: loads RUN_DIR/tb with EventAccumulator (what TensorBoard's server uses) and writes
{tag: [[step, value], ...]} as JSON.
records mode: reads every record of one event file with TensorBoard's record reader, which checks
each length and payload CRC-32C; prints the record count, or exits 1 naming the error.

usage: tensorboard_read.py scalars TB_DIR OUT.json
       tensorboard_read.py records EVENT_FILE
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow


def scalars(tb_dir, out):
    accumulator = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    table = {tag: [[e.step, e.value] for e in accumulator.Scalars(tag)]
             for tag in accumulator.Tags()["scalars"]}
    with open(out, "w") as f:
        json.dump(table, f)


def records(path):
    reader = pywrap_tensorflow.PyRecordReader_New(path.encode(), 0, b"", None)
    count = 0
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            break
        except errors.DataLossError as e:
            print("rejected after %d records: %s" % (count, e))
            sys.exit(1)
        count += 1
    print("records: %d" % count)


def main():
    if sys.argv[1] == "scalars":
        scalars(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "records":
        records(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
