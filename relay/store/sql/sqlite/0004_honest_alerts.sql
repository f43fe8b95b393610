-- Migration 4: a producer alert is no longer dressed as a Hotmart event (issue 12 §2).

-- Its event carries what it is about, a DestinationDisabled (relay/alerts.py), instead
-- of a made-up Hotmart event whose id was 'alert:' and the disabled destination's key.
UPDATE events
SET payload_json = json_object(
        'destination_key', substr(json_extract(payload_json, '$.id'), length('alert:') + 1),
        'disabled_at_ms', received_at_ms)
WHERE source = 'relay' AND event_name = 'DESTINATION_DISABLED' AND json_valid(payload_json)
  AND json_extract(payload_json, '$.id') LIKE 'alert:%';

-- Its delivery is keyed by the destination it is about, as every delivery is; its kind
-- says that it goes to the producer. Only alerts ever had this prefix.
UPDATE deliveries SET destination_key = substr(destination_key, length('alert:') + 1)
WHERE destination_key LIKE 'alert:%';
