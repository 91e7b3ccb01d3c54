-- Issue 22: the clinic of a chain each case belongs to (an id of the sites file); null in
-- a deployment of one clinic. The case API filters by it for tokens scoped to sites.
ALTER TABLE cases ADD COLUMN site text;
CREATE INDEX cases_site ON cases (site, case_id) WHERE site IS NOT NULL;
