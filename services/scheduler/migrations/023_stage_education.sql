-- Issue 21: the stage explained for the patient (schemas StageEducation, one per language,
-- as JSON), copied from the plan when the case opens, carried on its commands.
ALTER TABLE cases ADD COLUMN education text;
