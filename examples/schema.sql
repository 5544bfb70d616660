-- The small maritime schema the examples, tests and demo use.
-- The same schema runs on the shore and on every vessel.
CREATE TYPE certificate_status AS ENUM ('valid', 'expired', 'revoked');

-- Every vessel of the fleet; code is the vessel's FleetSync node id.
CREATE TABLE vessel (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  code text NOT NULL UNIQUE,
  name text NOT NULL,
  imo_number text,
  flag text
);

-- Reference data: kinds of certificate (STCW basic safety, medical fitness, ...).
CREATE TABLE certificate_type (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  code text NOT NULL UNIQUE,
  title text NOT NULL,
  validity_months integer CHECK (validity_months > 0)
);

-- Crew: each seafarer serves on one vessel at a time.
CREATE TABLE seafarer (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  vessel_code text REFERENCES vessel (code),
  full_name text NOT NULL,
  rank text,
  contact_number text,
  notes text
);
-- A vessel's crew is found by its routing column: each vessel's catch-up, transfer and
-- partition check reads by it (fleetsync init warns when a routing column has no index).
CREATE INDEX seafarer_vessel_code ON seafarer (vessel_code);

-- Certificates follow their seafarer from vessel to vessel.
CREATE TABLE certificate (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  seafarer_id uuid NOT NULL REFERENCES seafarer (id),
  certificate_type_id uuid NOT NULL REFERENCES certificate_type (id),
  number text,
  issued_on date,
  expires_on date,
  status certificate_status NOT NULL DEFAULT 'valid',
  remarks text
);
-- Certificates are routed through their seafarer: found by seafarer_id.
CREATE INDEX certificate_seafarer_id ON certificate (seafarer_id);
