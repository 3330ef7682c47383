"""Tests of hhjax.video.read_ahead: order, errors, overlap with the consumer, early stop."""

import threading

import pytest

from hhjax import video


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_items_come_in_order_and_all_of_them(depth):
  assert list(video.read_ahead(iter(range(50)), depth)) == list(range(50))
  assert list(video.read_ahead([], depth)) == []


@pytest.mark.parametrize("depth", [0, 2])
def test_an_error_of_the_source_reaches_the_consumer_after_the_items_before_it(depth):
  def source():
    yield "a"
    yield "b"
    raise video.VideoError("clip.mp4", "decoding failed at frame 64")

  got = []
  with pytest.raises(video.VideoError, match="clip.mp4: decoding failed at frame 64"):
    for item in video.read_ahead(source(), depth):
      got.append(item)
  assert got == ["a", "b"]


def test_the_next_item_is_produced_while_the_consumer_works():
  produced = [threading.Event() for _ in range(3)]

  def source():
    for i in range(3):
      produced[i].set()
      yield i

  items = video.read_ahead(source(), depth=1)
  assert next(items) == 0
  # Item 1 is produced without the consumer asking for it (the consumer is "working").
  assert produced[1].wait(timeout=10)
  assert list(items) == [1, 2]


def test_without_a_thread_nothing_is_produced_ahead():
  produced = []

  def source():
    for i in range(3):
      produced.append(i)
      yield i

  items = video.read_ahead(source(), depth=0)
  assert next(items) == 0 and produced == [0]


def test_stopping_early_ends_the_thread_and_closes_the_source():
  closed = threading.Event()
  produced = []

  def source():
    try:
      for i in range(1000):
        produced.append(i)
        yield i
    finally:
      closed.set()

  before = threading.active_count()
  for item in video.read_ahead(source(), depth=2):
    if item == 1:
      break  # closes the generator: the thread stops and the source is closed
  assert closed.is_set()
  assert len(produced) <= 5  # at most depth items ahead, plus the one being put
  assert threading.active_count() == before
  assert not any(t.name == "hhjax-read-ahead" for t in threading.enumerate())


def test_negative_depth_is_refused_at_the_call():
  with pytest.raises(ValueError, match="depth must be >= 0"):
    video.read_ahead([1], -1)
