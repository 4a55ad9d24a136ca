--
-- PostgreSQL database dump
--

\restrict j9RCpmWLmpQcZpECdyRDcIved8Ycli4ZRAdLFhSmReKCbjOLjbDfvYPschoF9nb

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: groups_version_bump(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.groups_version_bump() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO '$user', 'public'
    AS $$
BEGIN
	UPDATE groups_version SET version = version + 1 WHERE id = 1;
	RETURN NULL;
END
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: ca_certificates; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ca_certificates (
    id text NOT NULL,
    etag text NOT NULL,
    doc json NOT NULL
);


--
-- Name: enrollments; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.enrollments (
    id text NOT NULL,
    etag text NOT NULL,
    doc json NOT NULL
);


--
-- Name: groups; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.groups (
    id text NOT NULL,
    attestation text NOT NULL,
    etag text NOT NULL,
    doc json NOT NULL
);


--
-- Name: groups_version; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.groups_version (
    id integer NOT NULL,
    version bigint NOT NULL,
    CONSTRAINT groups_version_id_check CHECK ((id = 1))
);


--
-- Name: heartbeats; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.heartbeats (
    node text NOT NULL,
    at bigint NOT NULL
);


--
-- Name: hub_devices; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.hub_devices (
    hub text NOT NULL,
    device_id text NOT NULL,
    doc json NOT NULL
);


--
-- Name: meta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.meta (
    key text NOT NULL,
    value text NOT NULL
);


--
-- Name: operations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.operations (
    id text NOT NULL,
    registration_id text NOT NULL,
    status text NOT NULL,
    created bigint NOT NULL,
    owner text DEFAULT ''::text NOT NULL,
    lease_until bigint DEFAULT 0 NOT NULL,
    doc json NOT NULL
);


--
-- Name: registrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.registrations (
    id text NOT NULL,
    group_id text DEFAULT ''::text NOT NULL,
    etag text NOT NULL,
    doc json NOT NULL
);


--
-- Name: schema_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schema_migrations (
    version integer NOT NULL
);


--
-- Name: tpm_challenges; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tpm_challenges (
    id text NOT NULL,
    doc json NOT NULL
);


--
-- Data for Name: ca_certificates; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.ca_certificates VALUES ('root-ca', '"2IEMKR6YYQBAPRM5YZ5LMJBJP6"', '{"Name":"Root-CA","Certificate":"-----BEGIN CERTIFICATE-----\nMIIBfixtureIntermediate==\n-----END CERTIFICATE-----\n","Verified":true,"VerificationCode":"0A1B2C3D4E5F","ETag":"\"2IEMKR6YYQBAPRM5YZ5LMJBJP6\"","Created":"2026-12-03T13:19:49.846303931Z","Updated":"2026-12-03T13:19:49.846303931Z"}');
INSERT INTO public.ca_certificates VALUES ('root-ca-2', '"URAM5TW52BCSIRCWLNFZWKEOM4"', '{"Name":"root-ca-2","Certificate":"-----BEGIN CERTIFICATE-----\nMIIBfixtureLeafPrimary<&>==\n-----END CERTIFICATE-----\n","Verified":false,"VerificationCode":"F00DFACE","ETag":"\"URAM5TW52BCSIRCWLNFZWKEOM4\"","Created":"2026-12-03T13:19:49.847094934Z","Updated":"2026-12-03T13:19:49.847094934Z"}');


--
-- Data for Name: enrollments; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.enrollments VALUES ('sym-device-01', '"KDTDCC7TT2ENALMSDHL7XVYAYJ"', '{"RegistrationID":"Sym-Device-01","DeviceID":"sym-device-01-on-hub","OptionalDeviceInformation":{"vendor":"A&B <Ltd>","serial":"Ä-123"},"Attestation":{"Type":"symmetricKey","SymmetricKey":{"PrimaryKey":"cHJpbWFyeS1lbnJvbGxtZW50LWtleQ==","SecondaryKey":"c2Vjb25kYXJ5LWVucm9sbG1lbnQta2V5"},"X509":null,"TPM":null},"IoTEdge":true,"IoTHubHostName":"hub-a.example.net","IoTHubs":["hub-a.example.net","hub-b.example.net"],"InitialTwin":{"tags":{"site":"a&b<c>"},"properties":{"desired":{"interval":30}}},"ProvisioningStatus":"enabled","ReprovisionPolicy":{"UpdateHubAssignment":true,"MigrateDeviceData":false},"AllocationPolicy":"custom","CustomAllocation":{"WebhookURL":"https://hooks.example.net/allocate?code=x&y=<1>","APIVersion":"2021-10-01","SigningSecret":"d2ViaG9vay1zaWduaW5nLXNlY3JldA=="},"Extra":{"credentialPolicyName":"policy-1","deviceTypeRefs":["t1","t2"]},"ETag":"\"KDTDCC7TT2ENALMSDHL7XVYAYJ\"","Created":"2026-12-03T13:19:49.840536101Z","Updated":"2026-12-03T13:19:49.840536101Z"}');
INSERT INTO public.enrollments VALUES ('x509-device-01', '"VORXS7HSMQBR4L7U4ISLXS26PS"', '{"RegistrationID":"x509-device-01","DeviceID":"","OptionalDeviceInformation":null,"Attestation":{"Type":"x509","SymmetricKey":null,"X509":{"ClientCertificates":{"Primary":"-----BEGIN CERTIFICATE-----\nMIIBfixtureLeafPrimary<&>==\n-----END CERTIFICATE-----\n","Secondary":"-----BEGIN CERTIFICATE-----\nMIIBfixtureLeafSecondary==\n-----END CERTIFICATE-----\n"},"SigningCertificates":null,"CAReferences":null},"TPM":null},"IoTEdge":false,"IoTHubHostName":"","IoTHubs":[],"InitialTwin":null,"ProvisioningStatus":"disabled","ReprovisionPolicy":{"UpdateHubAssignment":false,"MigrateDeviceData":true},"AllocationPolicy":"static","CustomAllocation":null,"Extra":null,"ETag":"\"VORXS7HSMQBR4L7U4ISLXS26PS\"","Created":"2026-12-03T13:19:49.841509728Z","Updated":"2026-12-03T13:19:49.841509728Z"}');
INSERT INTO public.enrollments VALUES ('tpm-device-01', '"VPBLOKVDNIO3XP7BXP5MT7OGP6"', '{"RegistrationID":"tpm-device-01","DeviceID":"","OptionalDeviceInformation":null,"Attestation":{"Type":"tpm","SymmetricKey":null,"X509":null,"TPM":{"EndorsementKey":"ARoAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAxsj2gUScTk1UjuioeTlfGYZrrimExB+bScH75adUMRIi2UOMxG1kw4y+9RW/IVoMl4e620VxZad0ARX2gUqVjYO7KPVt3dyKhZS3dkcvfBisBhP1XH9B33VqHG9SHnbnQXdBUaCgKAfxome8UmBKfe+naTsE5fkvjb/do3/dD6l4sGBwFCnKRdln4XpM03zLpoHFao8zOwt8l/uP3qUIxmCYv9A7m69Ms+5/pCkTu/rK4mRDsfhZ0QLfbzVI6zQFOKF/rwsfBtFeWlWtcuJMKlXdD8TXWElTzgh7JS4qhFzreL0c1mI0GCj+Aws0usZh7dLIVPnlgZcBhgy1SSDQMQ==","StorageRootKey":"ARYAAQALAAMAcgAAAAYAgABDABAIAAAAAAABAMsrkUYXvhqcDc3/N0DRzKiu8abmLWcNUUXo2ogGlLQ+lH8cSeg3Y6Z+JoIDgovYwRk1kB6Hvz8DGoXkkwFcUsTcHKdIMXC5RvcdPm4ESOAXy3kLcQsbvW/9YBvb3uDqVR9QJNR8XKqgBXA1u/SCj4pH/v8kDEAl6YNefvqXFTgOzILwLUdvPZyAjOqAwHEohAnb0Xbc6W9Gh+p0gs/jhyIGGlt17bfQ/jZp/KG+3/4Mq8F+GwI2n7YOg+ypLdHy4HQS+2xlqNLdDlzpAAr0mvy3+rVTKbdabs7S/BUSY3rKTT8Ww8vUqfBcA6LvZBJnLsDVq+HEvYBmLuU7TmyqYpAEBs0HnaVq6SYpHQ=="}},"IoTEdge":false,"IoTHubHostName":"hub-b.example.net","IoTHubs":null,"InitialTwin":null,"ProvisioningStatus":"","ReprovisionPolicy":null,"AllocationPolicy":"hashed","CustomAllocation":null,"Extra":null,"ETag":"\"VPBLOKVDNIO3XP7BXP5MT7OGP6\"","Created":"2026-12-03T13:19:49.842134019Z","Updated":"2026-12-03T13:19:49.842730527Z"}');


--
-- Data for Name: groups; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.groups VALUES ('factory-line-1', 'symmetricKey', '"7DLVWMONAQ52AVQAARP62ZO5EF"', '{"ID":"Factory-Line-1","Attestation":{"Type":"symmetricKey","SymmetricKey":{"PrimaryKey":"Z3JvdXAtcHJpbWFyeS1rZXk=","SecondaryKey":"Z3JvdXAtc2Vjb25kYXJ5LWtleQ=="},"X509":null,"TPM":null},"IoTEdge":true,"IoTHubHostName":"","IoTHubs":["hub-b.example.net"],"InitialTwin":{"tags":{"line":1}},"ProvisioningStatus":"enabled","ReprovisionPolicy":{"UpdateHubAssignment":true,"MigrateDeviceData":true},"AllocationPolicy":"geoLatency","CustomAllocation":null,"Extra":{"namespaceName":"ns-1"},"ETag":"\"7DLVWMONAQ52AVQAARP62ZO5EF\"","Created":"2026-12-03T13:19:49.843544244Z","Updated":"2026-12-03T13:19:49.843544244Z"}');
INSERT INTO public.groups VALUES ('x509-signed', 'x509', '"AMZWAWYGMYY7N5OENN2CH3DJ7S"', '{"ID":"x509-signed","Attestation":{"Type":"x509","SymmetricKey":null,"X509":{"ClientCertificates":null,"SigningCertificates":{"Primary":"-----BEGIN CERTIFICATE-----\nMIIBfixtureIntermediate==\n-----END CERTIFICATE-----\n","Secondary":"TUlJQmZpeHR1cmVSb290Q0E="},"CAReferences":null},"TPM":null},"IoTEdge":false,"IoTHubHostName":"","IoTHubs":null,"InitialTwin":null,"ProvisioningStatus":"enabled","ReprovisionPolicy":null,"AllocationPolicy":"custom","CustomAllocation":{"WebhookURL":"https://hooks.example.net/group","APIVersion":"2019-03-31","SigningSecret":""},"Extra":null,"ETag":"\"AMZWAWYGMYY7N5OENN2CH3DJ7S\"","Created":"2026-12-03T13:19:49.844823183Z","Updated":"2026-12-03T13:19:49.844823183Z"}');
INSERT INTO public.groups VALUES ('x509-ca', 'x509', '"VZWNCQMZ6BI3KPJVQV4GM47X7E"', '{"ID":"x509-ca","Attestation":{"Type":"x509","SymmetricKey":null,"X509":{"ClientCertificates":null,"SigningCertificates":null,"CAReferences":{"Primary":"Root-CA","Secondary":"root-ca-2"}},"TPM":null},"IoTEdge":false,"IoTHubHostName":"hub-a.example.net","IoTHubs":null,"InitialTwin":null,"ProvisioningStatus":"disabled","ReprovisionPolicy":null,"AllocationPolicy":"","CustomAllocation":null,"Extra":null,"ETag":"\"VZWNCQMZ6BI3KPJVQV4GM47X7E\"","Created":"2026-12-03T13:19:49.84548763Z","Updated":"2026-12-03T13:19:49.84548763Z"}');


--
-- Data for Name: groups_version; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.groups_version VALUES (1, 6);


--
-- Data for Name: heartbeats; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: hub_devices; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.hub_devices VALUES ('hub-b.example.net', 'group-dev-01', '{"Hub":"hub-b.example.net","DeviceID":"Group-Dev-01","AuthKind":"symmetricKey","PrimaryKey":"ZGV2aWNlLXByaW1hcnkta2V5","SecondaryKey":"ZGV2aWNlLXNlY29uZGFyeS1rZXk=","X509Thumbprint":"","X509CASigned":false,"IoTEdge":true,"Twin":{"tags":{"line":1,"note":"<&>"},"properties":{"desired":{"interval":30}}},"Updated":"2025-06-01T10:00:01.123456789Z"}');
INSERT INTO public.hub_devices VALUES ('hub-a.example.net', 'x509-device-01', '{"Hub":"hub-a.example.net","DeviceID":"x509-device-01","AuthKind":"x509","PrimaryKey":"","SecondaryKey":"","X509Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","X509CASigned":false,"IoTEdge":false,"Twin":null,"Updated":"2025-06-01T10:00:04.123456789Z"}');
INSERT INTO public.hub_devices VALUES ('hub-a.example.net', 'ca-dev-01', '{"Hub":"hub-a.example.net","DeviceID":"CA-Dev-01","AuthKind":"x509","PrimaryKey":"","SecondaryKey":"","X509Thumbprint":"","X509CASigned":true,"IoTEdge":false,"Twin":{},"Updated":"2025-06-01T10:00:08.123456789Z"}');
INSERT INTO public.hub_devices VALUES ('hub-b.example.net', 'tpm-device-01', '{"Hub":"hub-b.example.net","DeviceID":"tpm-device-01","AuthKind":"tpm","PrimaryKey":"dHBtLWh1Yi1rZXk=","SecondaryKey":"","X509Thumbprint":"","X509CASigned":false,"IoTEdge":false,"Twin":null,"Updated":"2025-06-01T10:00:06.123456789Z"}');


--
-- Data for Name: meta; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.meta VALUES ('idScope', '0ne00F1XTUR');
INSERT INTO public.meta VALUES ('owner.primaryKey', 'b3duZXItcHJpbWFyeS1rZXktZml4dHVyZQ==');


--
-- Data for Name: operations; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.11111111-2222-3333-4444-555555555555', 'group-dev-01', 'assigned', 1748772000123456789, '', 0, '{"ID":"4.0a1b2c3d4e5f6071.11111111-2222-3333-4444-555555555555","RegistrationID":"Group-Dev-01","EnrollmentGroupID":"Factory-Line-1","Attestation":"symmetricKey","X509":null,"TPMKey":"","TPMStorageRootKey":"","Status":"assigned","Payload":null,"Result":{"RegistrationID":"Group-Dev-01","DeviceID":"Group-Dev-01","AssignedHub":"hub-b.example.net","InitialHub":"hub-a.example.net","Status":"assigned","Substatus":"deviceDataMigrated","ErrorCode":0,"ErrorMessage":"","Payload":{"greeting":"hi <there> & welcome","n":1.50},"EnrollmentGroupID":"Factory-Line-1","Attestation":"symmetricKey","X509":null,"TPMAuthenticationKey":"","Created":"2025-06-01T10:00:00.123456789Z","Updated":"2025-06-01T10:00:01.123456789Z","ETag":"IkVQT1E1M0VCVkdJUEhXQlpSNTJOQVIyM05TIg=="},"Created":"2025-06-01T10:00:00.123456789Z","Updated":"2025-06-01T10:00:01.123456789Z"}');
INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.22222222-2222-3333-4444-555555555555', 'failed-dev', 'failed', 1748772002123456789, '', 0, '{"ID":"4.0a1b2c3d4e5f6071.22222222-2222-3333-4444-555555555555","RegistrationID":"Failed-Dev","EnrollmentGroupID":"x509-signed","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":{"SubjectName":"CN=Intermediate","SHA1Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCC","SHA256Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100","IssuerName":"CN=Root CA","NotBefore":"2024-01-01T00:00:00Z","NotAfter":"2034-01-01T00:00:00Z","SerialNumber":"02","Version":3}},"TPMKey":"","TPMStorageRootKey":"","Status":"failed","Payload":null,"Result":{"RegistrationID":"Failed-Dev","DeviceID":"","AssignedHub":"","InitialHub":"","Status":"failed","Substatus":"","ErrorCode":400207,"ErrorMessage":"Custom allocation failed: \"no hub\" <&>","Payload":null,"EnrollmentGroupID":"x509-signed","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":{"SubjectName":"CN=Intermediate","SHA1Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCC","SHA256Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100","IssuerName":"CN=Root CA","NotBefore":"2024-01-01T00:00:00Z","NotAfter":"2034-01-01T00:00:00Z","SerialNumber":"02","Version":3}},"TPMAuthenticationKey":"","Created":"2025-06-01T10:00:02.123456789Z","Updated":"2025-06-01T10:00:03.123456789Z","ETag":"IjJCUFVSRTY0QjQ3RElONFYyUlE3Q1VES01NIg=="},"Created":"2025-06-01T10:00:02.123456789Z","Updated":"2025-06-01T10:00:03.123456789Z"}');
INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.33333333-2222-3333-4444-555555555555', 'x509-device-01', 'disabled', 1748772004123456789, '', 0, '{"ID":"4.0a1b2c3d4e5f6071.33333333-2222-3333-4444-555555555555","RegistrationID":"x509-device-01","EnrollmentGroupID":"","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":null},"TPMKey":"","TPMStorageRootKey":"","Status":"disabled","Payload":null,"Result":{"RegistrationID":"x509-device-01","DeviceID":"","AssignedHub":"","InitialHub":"","Status":"disabled","Substatus":"","ErrorCode":0,"ErrorMessage":"","Payload":null,"EnrollmentGroupID":"","Attestation":"x509","X509":null,"TPMAuthenticationKey":"","Created":"0001-01-01T00:00:00Z","Updated":"2025-06-01T10:00:04.123456789Z","ETag":""},"Created":"2025-06-01T10:00:04.123456789Z","Updated":"2025-06-01T10:00:04.123456789Z"}');
INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.44444444-2222-3333-4444-555555555555', 'tpm-device-01', 'assigned', 1748772005123456789, '', 0, '{"ID":"4.0a1b2c3d4e5f6071.44444444-2222-3333-4444-555555555555","RegistrationID":"tpm-device-01","EnrollmentGroupID":"","Attestation":"tpm","X509":null,"TPMKey":"SzEtY2hhbGxlbmdlLWtleS0xMjM0NTY3OA==","TPMStorageRootKey":"ARYAAQALAAMAcgAAAAYAgABDABAIAAAAAAABAMsrkUYXvhqcDc3/N0DRzKiu8abmLWcNUUXo2ogGlLQ+lH8cSeg3Y6Z+JoIDgovYwRk1kB6Hvz8DGoXkkwFcUsTcHKdIMXC5RvcdPm4ESOAXy3kLcQsbvW/9YBvb3uDqVR9QJNR8XKqgBXA1u/SCj4pH/v8kDEAl6YNefvqXFTgOzILwLUdvPZyAjOqAwHEohAnb0Xbc6W9Gh+p0gs/jhyIGGlt17bfQ/jZp/KG+3/4Mq8F+GwI2n7YOg+ypLdHy4HQS+2xlqNLdDlzpAAr0mvy3+rVTKbdabs7S/BUSY3rKTT8Ww8vUqfBcA6LvZBJnLsDVq+HEvYBmLuU7TmyqYpAEBs0HnaVq6SYpHQ==","Status":"assigned","Payload":null,"Result":{"RegistrationID":"tpm-device-01","DeviceID":"tpm-device-01","AssignedHub":"hub-b.example.net","InitialHub":"hub-b.example.net","Status":"assigned","Substatus":"initialAssignment","ErrorCode":0,"ErrorMessage":"","Payload":null,"EnrollmentGroupID":"","Attestation":"tpm","X509":null,"TPMAuthenticationKey":"AAFjcmVkZW50aWFsLWJsb2ItZm9yLXRoZS1maXh0dXJl","Created":"2025-06-01T10:00:05.123456789Z","Updated":"2025-06-01T10:00:06.123456789Z","ETag":"IlFUSUZOR1ZaWU9WWlk1RzY2RFpDU0lWM0Q3Ig=="},"Created":"2025-06-01T10:00:05.123456789Z","Updated":"2025-06-01T10:00:06.123456789Z"}');
INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.55555555-2222-3333-4444-555555555555', 'ca-dev-01', 'assigned', 1748772007123456789, '', 0, '{"ID":"4.0a1b2c3d4e5f6071.55555555-2222-3333-4444-555555555555","RegistrationID":"CA-Dev-01","EnrollmentGroupID":"x509-ca","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":{"SubjectName":"CN=Intermediate","SHA1Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCC","SHA256Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100","IssuerName":"CN=Root CA","NotBefore":"2024-01-01T00:00:00Z","NotAfter":"2034-01-01T00:00:00Z","SerialNumber":"02","Version":3}},"TPMKey":"","TPMStorageRootKey":"","Status":"assigned","Payload":null,"Result":{"RegistrationID":"CA-Dev-01","DeviceID":"CA-Dev-01","AssignedHub":"hub-a.example.net","InitialHub":"hub-b.example.net","Status":"assigned","Substatus":"reprovisionedToInitialAssignment","ErrorCode":0,"ErrorMessage":"","Payload":null,"EnrollmentGroupID":"x509-ca","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":{"SubjectName":"CN=Intermediate","SHA1Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCC","SHA256Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100","IssuerName":"CN=Root CA","NotBefore":"2024-01-01T00:00:00Z","NotAfter":"2034-01-01T00:00:00Z","SerialNumber":"02","Version":3}},"TPMAuthenticationKey":"","Created":"2025-06-01T10:00:07.123456789Z","Updated":"2025-06-01T10:00:08.123456789Z","ETag":"Ik5NV09XTzdJWE5FV1hZQVhGV01NVkZHSUFFIg=="},"Created":"2025-06-01T10:00:07.123456789Z","Updated":"2025-06-01T10:00:08.123456789Z"}');
INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.66666666-2222-3333-4444-555555555555', 'group-dev-02', 'assigning', 1748772009123456789, 'node-a', 1748772040123456789, '{"ID":"4.0a1b2c3d4e5f6071.66666666-2222-3333-4444-555555555555","RegistrationID":"Group-Dev-02","EnrollmentGroupID":"Factory-Line-1","Attestation":"symmetricKey","X509":null,"TPMKey":"","TPMStorageRootKey":"","Status":"assigning","Payload":{"model":"t<1>","price":"5&6"},"Result":null,"Created":"2025-06-01T10:00:09.123456789Z","Updated":"2025-06-01T10:00:09.123456789Z"}');
INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.77777777-2222-3333-4444-555555555555', 'x509-device-01', 'assigning', 1748772010123456789, '', 0, '{"ID":"4.0a1b2c3d4e5f6071.77777777-2222-3333-4444-555555555555","RegistrationID":"x509-device-01","EnrollmentGroupID":"","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":null},"TPMKey":"","TPMStorageRootKey":"","Status":"assigning","Payload":null,"Result":null,"Created":"2025-06-01T10:00:10.123456789Z","Updated":"2025-06-01T10:00:10.123456789Z"}');


--
-- Data for Name: registrations; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.registrations VALUES ('group-dev-01', 'factory-line-1', 'IkVQT1E1M0VCVkdJUEhXQlpSNTJOQVIyM05TIg==', '{"RegistrationID":"Group-Dev-01","DeviceID":"Group-Dev-01","AssignedHub":"hub-b.example.net","InitialHub":"hub-a.example.net","Status":"assigned","Substatus":"deviceDataMigrated","ErrorCode":0,"ErrorMessage":"","Payload":{"greeting":"hi <there> & welcome","n":1.50},"EnrollmentGroupID":"Factory-Line-1","Attestation":"symmetricKey","X509":null,"TPMAuthenticationKey":"","Created":"2025-06-01T10:00:00.123456789Z","Updated":"2025-06-01T10:00:01.123456789Z","ETag":"IkVQT1E1M0VCVkdJUEhXQlpSNTJOQVIyM05TIg=="}');
INSERT INTO public.registrations VALUES ('failed-dev', 'x509-signed', 'IjJCUFVSRTY0QjQ3RElONFYyUlE3Q1VES01NIg==', '{"RegistrationID":"Failed-Dev","DeviceID":"","AssignedHub":"","InitialHub":"","Status":"failed","Substatus":"","ErrorCode":400207,"ErrorMessage":"Custom allocation failed: \"no hub\" <&>","Payload":null,"EnrollmentGroupID":"x509-signed","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":{"SubjectName":"CN=Intermediate","SHA1Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCC","SHA256Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100","IssuerName":"CN=Root CA","NotBefore":"2024-01-01T00:00:00Z","NotAfter":"2034-01-01T00:00:00Z","SerialNumber":"02","Version":3}},"TPMAuthenticationKey":"","Created":"2025-06-01T10:00:02.123456789Z","Updated":"2025-06-01T10:00:03.123456789Z","ETag":"IjJCUFVSRTY0QjQ3RElONFYyUlE3Q1VES01NIg=="}');
INSERT INTO public.registrations VALUES ('tpm-device-01', '', 'IlFUSUZOR1ZaWU9WWlk1RzY2RFpDU0lWM0Q3Ig==', '{"RegistrationID":"tpm-device-01","DeviceID":"tpm-device-01","AssignedHub":"hub-b.example.net","InitialHub":"hub-b.example.net","Status":"assigned","Substatus":"initialAssignment","ErrorCode":0,"ErrorMessage":"","Payload":null,"EnrollmentGroupID":"","Attestation":"tpm","X509":null,"TPMAuthenticationKey":"AAFjcmVkZW50aWFsLWJsb2ItZm9yLXRoZS1maXh0dXJl","Created":"2025-06-01T10:00:05.123456789Z","Updated":"2025-06-01T10:00:06.123456789Z","ETag":"IlFUSUZOR1ZaWU9WWlk1RzY2RFpDU0lWM0Q3Ig=="}');
INSERT INTO public.registrations VALUES ('ca-dev-01', 'x509-ca', 'Ik5NV09XTzdJWE5FV1hZQVhGV01NVkZHSUFFIg==', '{"RegistrationID":"CA-Dev-01","DeviceID":"CA-Dev-01","AssignedHub":"hub-a.example.net","InitialHub":"hub-b.example.net","Status":"assigned","Substatus":"reprovisionedToInitialAssignment","ErrorCode":0,"ErrorMessage":"","Payload":null,"EnrollmentGroupID":"x509-ca","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":{"SubjectName":"CN=Intermediate","SHA1Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCC","SHA256Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100","IssuerName":"CN=Root CA","NotBefore":"2024-01-01T00:00:00Z","NotAfter":"2034-01-01T00:00:00Z","SerialNumber":"02","Version":3}},"TPMAuthenticationKey":"","Created":"2025-06-01T10:00:07.123456789Z","Updated":"2025-06-01T10:00:08.123456789Z","ETag":"Ik5NV09XTzdJWE5FV1hZQVhGV01NVkZHSUFFIg=="}');


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.schema_migrations VALUES (1);
INSERT INTO public.schema_migrations VALUES (2);
INSERT INTO public.schema_migrations VALUES (3);


--
-- Data for Name: tpm_challenges; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.tpm_challenges VALUES ('tpm-device-02', '{"RegistrationID":"TPM-Device-02","Key":"SzEtY2hhbGxlbmdlLWtleS1kZXZpY2UtMDI=","StorageRootKey":"ARYAAQALAAMAcgAAAAYAgABDABAIAAAAAAABAMsrkUYXvhqcDc3/N0DRzKiu8abmLWcNUUXo2ogGlLQ+lH8cSeg3Y6Z+JoIDgovYwRk1kB6Hvz8DGoXkkwFcUsTcHKdIMXC5RvcdPm4ESOAXy3kLcQsbvW/9YBvb3uDqVR9QJNR8XKqgBXA1u/SCj4pH/v8kDEAl6YNefvqXFTgOzILwLUdvPZyAjOqAwHEohAnb0Xbc6W9Gh+p0gs/jhyIGGlt17bfQ/jZp/KG+3/4Mq8F+GwI2n7YOg+ypLdHy4HQS+2xlqNLdDlzpAAr0mvy3+rVTKbdabs7S/BUSY3rKTT8Ww8vUqfBcA6LvZBJnLsDVq+HEvYBmLuU7TmyqYpAEBs0HnaVq6SYpHQ==","Created":"2025-06-01T10:00:11.123456789Z","Expires":"2025-06-01T10:01:11.123456789Z"}');
INSERT INTO public.tpm_challenges VALUES ('tpm-device-03', '{"RegistrationID":"tpm-device-03","Key":"SzEtY2hhbGxlbmdlLWtleS1kZXZpY2UtMDM=","StorageRootKey":"","Created":"2025-06-01T10:00:12.123456789Z","Expires":"2025-06-01T10:01:12.123456789Z"}');


--
-- Name: ca_certificates ca_certificates_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ca_certificates
    ADD CONSTRAINT ca_certificates_pkey PRIMARY KEY (id);


--
-- Name: enrollments enrollments_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.enrollments
    ADD CONSTRAINT enrollments_pkey PRIMARY KEY (id);


--
-- Name: groups groups_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.groups
    ADD CONSTRAINT groups_pkey PRIMARY KEY (id);


--
-- Name: groups_version groups_version_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.groups_version
    ADD CONSTRAINT groups_version_pkey PRIMARY KEY (id);


--
-- Name: heartbeats heartbeats_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.heartbeats
    ADD CONSTRAINT heartbeats_pkey PRIMARY KEY (node);


--
-- Name: hub_devices hub_devices_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.hub_devices
    ADD CONSTRAINT hub_devices_pkey PRIMARY KEY (hub, device_id);


--
-- Name: meta meta_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.meta
    ADD CONSTRAINT meta_pkey PRIMARY KEY (key);


--
-- Name: operations operations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.operations
    ADD CONSTRAINT operations_pkey PRIMARY KEY (id);


--
-- Name: registrations registrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.registrations
    ADD CONSTRAINT registrations_pkey PRIMARY KEY (id);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: tpm_challenges tpm_challenges_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tpm_challenges
    ADD CONSTRAINT tpm_challenges_pkey PRIMARY KEY (id);


--
-- Name: operations_by_created; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX operations_by_created ON public.operations USING btree (created);


--
-- Name: operations_by_registration; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX operations_by_registration ON public.operations USING btree (registration_id, created);


--
-- Name: operations_pending; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX operations_pending ON public.operations USING btree (created) WHERE (status = 'assigning'::text);


--
-- Name: registrations_by_group; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX registrations_by_group ON public.registrations USING btree (group_id, id);


--
-- Name: groups groups_version_bump; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER groups_version_bump AFTER INSERT OR DELETE OR UPDATE OR TRUNCATE ON public.groups FOR EACH STATEMENT EXECUTE FUNCTION public.groups_version_bump();


--
-- PostgreSQL database dump complete
--

\unrestrict j9RCpmWLmpQcZpECdyRDcIved8Ycli4ZRAdLFhSmReKCbjOLjbDfvYPschoF9nb

