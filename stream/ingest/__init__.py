"""EHR feeds in and out: HL7 v2 over MLLP (or files), FHIR R4 resources, and FHIR RiskAssessments.

Pure mapping modules turn a source message into the project's own events
(:class:`~notestream.stream.events.NoteEvent`, :class:`~notestream.stream.events.AdmissionEvent`) and never touch the network:
:mod:`notestream.stream.ingest.hl7_values` (HL7 times, escapes, character sets), :mod:`notestream.stream.ingest.hl7_map`
(HL7 v2 messages), :mod:`notestream.stream.ingest.hl7_ack` (ACK messages), :mod:`notestream.stream.ingest.fhir_map` (FHIR
resources) and :mod:`notestream.stream.ingest.fhir_export` (risk updates as RiskAssessment resources).

The services around them: :mod:`notestream.stream.ingest.producer` (events to Kafka, acknowledged),
:mod:`notestream.stream.ingest.hl7_server` (the MLLP listener), :mod:`notestream.stream.ingest.hl7_file` (backfills from
files), :mod:`notestream.stream.ingest.fhir_server` (the FHIR HTTP endpoint) and :mod:`notestream.stream.ingest.fhir_ndjson`
(Bulk Data NDJSON files). docs/ehr.md tells a hospital's interface team how to connect.
"""
