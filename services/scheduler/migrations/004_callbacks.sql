-- A patient who asked to be called back at a given time (outcome callback_requested).
ALTER TABLE attempts ADD COLUMN callback_at timestamptz;
