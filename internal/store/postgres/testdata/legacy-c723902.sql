--
-- PostgreSQL database dump
--

\restrict dcKbAE5Bn82UL3eAUBMR44xeXdtbfJYbW6lJLxssUOVnn4O9mzdcebQ3gzep5MB

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

INSERT INTO public.ca_certificates VALUES ('root-ca', '"FPGB2UR4KJP4WAY6WEREU4DNVE"', '{"Name":"Root-CA","Certificate":"-----BEGIN CERTIFICATE-----\nMIIBfixtureIntermediate==\n-----END CERTIFICATE-----\n","Verified":true,"VerificationCode":"0A1B2C3D4E5F","ETag":"\"FPGB2UR4KJP4WAY6WEREU4DNVE\"","Created":"2026-12-03T13:58:59.178483463Z","Updated":"2026-12-03T13:58:59.178483463Z"}');
INSERT INTO public.ca_certificates VALUES ('root-ca-2', '"RAKQSF5MGMFYIAQXHJVYTPGPVV"', '{"Name":"root-ca-2","Certificate":"-----BEGIN CERTIFICATE-----\nMIIBfixtureLeafPrimary<&>==\n-----END CERTIFICATE-----\n","Verified":false,"VerificationCode":"F00DFACE","ETag":"\"RAKQSF5MGMFYIAQXHJVYTPGPVV\"","Created":"2026-12-03T13:58:59.179098016Z","Updated":"2026-12-03T13:58:59.179098016Z"}');


--
-- Data for Name: enrollments; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.enrollments VALUES ('sym-device-01', '"SII4UPCAN73RP55Q4VSKLQCDLO"', '{"RegistrationID":"Sym-Device-01","DeviceID":"sym-device-01-on-hub","OptionalDeviceInformation":{"vendor":"A&B <Ltd>","serial":"Ä-123"},"Attestation":{"Type":"symmetricKey","SymmetricKey":{"PrimaryKey":"cHJpbWFyeS1lbnJvbGxtZW50LWtleQ==","SecondaryKey":"c2Vjb25kYXJ5LWVucm9sbG1lbnQta2V5"},"X509":null,"TPM":null},"IoTEdge":true,"IoTHubHostName":"hub-a.example.net","IoTHubs":["hub-a.example.net","hub-b.example.net"],"InitialTwin":{"tags":{"site":"a&b<c>"},"properties":{"desired":{"interval":30}}},"ProvisioningStatus":"enabled","ReprovisionPolicy":{"UpdateHubAssignment":true,"MigrateDeviceData":false},"AllocationPolicy":"custom","CustomAllocation":{"WebhookURL":"https://hooks.example.net/allocate?code=x&y=<1>","APIVersion":"2021-10-01","SigningSecret":"d2ViaG9vay1zaWduaW5nLXNlY3JldA=="},"Extra":{"credentialPolicyName":"policy-1","deviceTypeRefs":["t1","t2"]},"ETag":"\"SII4UPCAN73RP55Q4VSKLQCDLO\"","Created":"2026-12-03T13:58:59.174436662Z","Updated":"2026-12-03T13:58:59.174436662Z"}');
INSERT INTO public.enrollments VALUES ('x509-device-01', '"YZVADPEQWIWRHJA42YNFZY7B2C"', '{"RegistrationID":"x509-device-01","DeviceID":"","OptionalDeviceInformation":null,"Attestation":{"Type":"x509","SymmetricKey":null,"X509":{"ClientCertificates":{"Primary":"-----BEGIN CERTIFICATE-----\nMIIBfixtureLeafPrimary<&>==\n-----END CERTIFICATE-----\n","Secondary":"-----BEGIN CERTIFICATE-----\nMIIBfixtureLeafSecondary==\n-----END CERTIFICATE-----\n"},"SigningCertificates":null,"CAReferences":null},"TPM":null},"IoTEdge":false,"IoTHubHostName":"","IoTHubs":[],"InitialTwin":null,"ProvisioningStatus":"disabled","ReprovisionPolicy":{"UpdateHubAssignment":false,"MigrateDeviceData":true},"AllocationPolicy":"static","CustomAllocation":null,"Extra":null,"ETag":"\"YZVADPEQWIWRHJA42YNFZY7B2C\"","Created":"2026-12-03T13:58:59.175261429Z","Updated":"2026-12-03T13:58:59.175261429Z"}');
INSERT INTO public.enrollments VALUES ('tpm-device-01', '"2P4Z3WJDK3444636BNFMWAZBLM"', '{"RegistrationID":"tpm-device-01","DeviceID":"","OptionalDeviceInformation":null,"Attestation":{"Type":"tpm","SymmetricKey":null,"X509":null,"TPM":{"EndorsementKey":"ARoAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAxsj2gUScTk1UjuioeTlfGYZrrimExB+bScH75adUMRIi2UOMxG1kw4y+9RW/IVoMl4e620VxZad0ARX2gUqVjYO7KPVt3dyKhZS3dkcvfBisBhP1XH9B33VqHG9SHnbnQXdBUaCgKAfxome8UmBKfe+naTsE5fkvjb/do3/dD6l4sGBwFCnKRdln4XpM03zLpoHFao8zOwt8l/uP3qUIxmCYv9A7m69Ms+5/pCkTu/rK4mRDsfhZ0QLfbzVI6zQFOKF/rwsfBtFeWlWtcuJMKlXdD8TXWElTzgh7JS4qhFzreL0c1mI0GCj+Aws0usZh7dLIVPnlgZcBhgy1SSDQMQ==","StorageRootKey":"ARYAAQALAAMAcgAAAAYAgABDABAIAAAAAAABAMsrkUYXvhqcDc3/N0DRzKiu8abmLWcNUUXo2ogGlLQ+lH8cSeg3Y6Z+JoIDgovYwRk1kB6Hvz8DGoXkkwFcUsTcHKdIMXC5RvcdPm4ESOAXy3kLcQsbvW/9YBvb3uDqVR9QJNR8XKqgBXA1u/SCj4pH/v8kDEAl6YNefvqXFTgOzILwLUdvPZyAjOqAwHEohAnb0Xbc6W9Gh+p0gs/jhyIGGlt17bfQ/jZp/KG+3/4Mq8F+GwI2n7YOg+ypLdHy4HQS+2xlqNLdDlzpAAr0mvy3+rVTKbdabs7S/BUSY3rKTT8Ww8vUqfBcA6LvZBJnLsDVq+HEvYBmLuU7TmyqYpAEBs0HnaVq6SYpHQ=="}},"IoTEdge":false,"IoTHubHostName":"hub-b.example.net","IoTHubs":null,"InitialTwin":null,"ProvisioningStatus":"","ReprovisionPolicy":null,"AllocationPolicy":"hashed","CustomAllocation":null,"Extra":null,"ETag":"\"2P4Z3WJDK3444636BNFMWAZBLM\"","Created":"2026-12-03T13:58:59.175690574Z","Updated":"2026-12-03T13:58:59.17616817Z"}');


--
-- Data for Name: groups; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.groups VALUES ('factory-line-1', 'symmetricKey', '"UALC4EAQCFXNAPECH5EPDFPZEL"', '{"ID":"Factory-Line-1","Attestation":{"Type":"symmetricKey","SymmetricKey":{"PrimaryKey":"Z3JvdXAtcHJpbWFyeS1rZXk=","SecondaryKey":"Z3JvdXAtc2Vjb25kYXJ5LWtleQ=="},"X509":null,"TPM":null},"IoTEdge":true,"IoTHubHostName":"","IoTHubs":["hub-b.example.net"],"InitialTwin":{"tags":{"line":1}},"ProvisioningStatus":"enabled","ReprovisionPolicy":{"UpdateHubAssignment":true,"MigrateDeviceData":true},"AllocationPolicy":"geoLatency","CustomAllocation":null,"Extra":{"namespaceName":"ns-1"},"ETag":"\"UALC4EAQCFXNAPECH5EPDFPZEL\"","Created":"2026-12-03T13:58:59.176799654Z","Updated":"2026-12-03T13:58:59.176799654Z"}');
INSERT INTO public.groups VALUES ('x509-signed', 'x509', '"GTT45RUTDGDQT2MMMLBGCU5EOH"', '{"ID":"x509-signed","Attestation":{"Type":"x509","SymmetricKey":null,"X509":{"ClientCertificates":null,"SigningCertificates":{"Primary":"-----BEGIN CERTIFICATE-----\nMIIBfixtureIntermediate==\n-----END CERTIFICATE-----\n","Secondary":"TUlJQmZpeHR1cmVSb290Q0E="},"CAReferences":null},"TPM":null},"IoTEdge":false,"IoTHubHostName":"","IoTHubs":null,"InitialTwin":null,"ProvisioningStatus":"enabled","ReprovisionPolicy":null,"AllocationPolicy":"custom","CustomAllocation":{"WebhookURL":"https://hooks.example.net/group","APIVersion":"2019-03-31","SigningSecret":""},"Extra":null,"ETag":"\"GTT45RUTDGDQT2MMMLBGCU5EOH\"","Created":"2026-12-03T13:58:59.177428514Z","Updated":"2026-12-03T13:58:59.177428514Z"}');
INSERT INTO public.groups VALUES ('x509-ca', 'x509', '"45ZYIFSPWSE2ODUWA7HASHNV53"', '{"ID":"x509-ca","Attestation":{"Type":"x509","SymmetricKey":null,"X509":{"ClientCertificates":null,"SigningCertificates":null,"CAReferences":{"Primary":"Root-CA","Secondary":"root-ca-2"}},"TPM":null},"IoTEdge":false,"IoTHubHostName":"hub-a.example.net","IoTHubs":null,"InitialTwin":null,"ProvisioningStatus":"disabled","ReprovisionPolicy":null,"AllocationPolicy":"","CustomAllocation":null,"Extra":null,"ETag":"\"45ZYIFSPWSE2ODUWA7HASHNV53\"","Created":"2026-12-03T13:58:59.177893927Z","Updated":"2026-12-03T13:58:59.177893927Z"}');


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

INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.11111111-2222-3333-4444-555555555555', 'group-dev-01', 'assigned', 1748772000123456789, '', 0, '{"ID":"4.0a1b2c3d4e5f6071.11111111-2222-3333-4444-555555555555","RegistrationID":"Group-Dev-01","EnrollmentGroupID":"Factory-Line-1","Attestation":"symmetricKey","X509":null,"TPMKey":"","TPMStorageRootKey":"","Status":"assigned","Payload":null,"Result":{"RegistrationID":"Group-Dev-01","DeviceID":"Group-Dev-01","AssignedHub":"hub-b.example.net","InitialHub":"hub-a.example.net","Status":"assigned","Substatus":"deviceDataMigrated","ErrorCode":0,"ErrorMessage":"","Payload":{"greeting":"hi <there> & welcome","n":1.50},"EnrollmentGroupID":"Factory-Line-1","Attestation":"symmetricKey","X509":null,"TPMAuthenticationKey":"","Created":"2025-06-01T10:00:00.123456789Z","Updated":"2025-06-01T10:00:01.123456789Z","ETag":"IkI0STdCS1VSNlFFSEpKSk9QWkk3SEZJT1VNIg=="},"Created":"2025-06-01T10:00:00.123456789Z","Updated":"2025-06-01T10:00:01.123456789Z"}');
INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.22222222-2222-3333-4444-555555555555', 'failed-dev', 'failed', 1748772002123456789, '', 0, '{"ID":"4.0a1b2c3d4e5f6071.22222222-2222-3333-4444-555555555555","RegistrationID":"Failed-Dev","EnrollmentGroupID":"x509-signed","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":{"SubjectName":"CN=Intermediate","SHA1Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCC","SHA256Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100","IssuerName":"CN=Root CA","NotBefore":"2024-01-01T00:00:00Z","NotAfter":"2034-01-01T00:00:00Z","SerialNumber":"02","Version":3}},"TPMKey":"","TPMStorageRootKey":"","Status":"failed","Payload":null,"Result":{"RegistrationID":"Failed-Dev","DeviceID":"","AssignedHub":"","InitialHub":"","Status":"failed","Substatus":"","ErrorCode":400207,"ErrorMessage":"Custom allocation failed: \"no hub\" <&>","Payload":null,"EnrollmentGroupID":"x509-signed","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":{"SubjectName":"CN=Intermediate","SHA1Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCC","SHA256Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100","IssuerName":"CN=Root CA","NotBefore":"2024-01-01T00:00:00Z","NotAfter":"2034-01-01T00:00:00Z","SerialNumber":"02","Version":3}},"TPMAuthenticationKey":"","Created":"2025-06-01T10:00:02.123456789Z","Updated":"2025-06-01T10:00:03.123456789Z","ETag":"IloyNE5GN1pXSTIzQzZHUVFQU0RKQ1JNUlhNIg=="},"Created":"2025-06-01T10:00:02.123456789Z","Updated":"2025-06-01T10:00:03.123456789Z"}');
INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.33333333-2222-3333-4444-555555555555', 'x509-device-01', 'disabled', 1748772004123456789, '', 0, '{"ID":"4.0a1b2c3d4e5f6071.33333333-2222-3333-4444-555555555555","RegistrationID":"x509-device-01","EnrollmentGroupID":"","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":null},"TPMKey":"","TPMStorageRootKey":"","Status":"disabled","Payload":null,"Result":{"RegistrationID":"x509-device-01","DeviceID":"","AssignedHub":"","InitialHub":"","Status":"disabled","Substatus":"","ErrorCode":0,"ErrorMessage":"","Payload":null,"EnrollmentGroupID":"","Attestation":"x509","X509":null,"TPMAuthenticationKey":"","Created":"0001-01-01T00:00:00Z","Updated":"2025-06-01T10:00:04.123456789Z","ETag":""},"Created":"2025-06-01T10:00:04.123456789Z","Updated":"2025-06-01T10:00:04.123456789Z"}');
INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.44444444-2222-3333-4444-555555555555', 'tpm-device-01', 'assigned', 1748772005123456789, '', 0, '{"ID":"4.0a1b2c3d4e5f6071.44444444-2222-3333-4444-555555555555","RegistrationID":"tpm-device-01","EnrollmentGroupID":"","Attestation":"tpm","X509":null,"TPMKey":"SzEtY2hhbGxlbmdlLWtleS0xMjM0NTY3OA==","TPMStorageRootKey":"ARYAAQALAAMAcgAAAAYAgABDABAIAAAAAAABAMsrkUYXvhqcDc3/N0DRzKiu8abmLWcNUUXo2ogGlLQ+lH8cSeg3Y6Z+JoIDgovYwRk1kB6Hvz8DGoXkkwFcUsTcHKdIMXC5RvcdPm4ESOAXy3kLcQsbvW/9YBvb3uDqVR9QJNR8XKqgBXA1u/SCj4pH/v8kDEAl6YNefvqXFTgOzILwLUdvPZyAjOqAwHEohAnb0Xbc6W9Gh+p0gs/jhyIGGlt17bfQ/jZp/KG+3/4Mq8F+GwI2n7YOg+ypLdHy4HQS+2xlqNLdDlzpAAr0mvy3+rVTKbdabs7S/BUSY3rKTT8Ww8vUqfBcA6LvZBJnLsDVq+HEvYBmLuU7TmyqYpAEBs0HnaVq6SYpHQ==","Status":"assigned","Payload":null,"Result":{"RegistrationID":"tpm-device-01","DeviceID":"tpm-device-01","AssignedHub":"hub-b.example.net","InitialHub":"hub-b.example.net","Status":"assigned","Substatus":"initialAssignment","ErrorCode":0,"ErrorMessage":"","Payload":null,"EnrollmentGroupID":"","Attestation":"tpm","X509":null,"TPMAuthenticationKey":"AAFjcmVkZW50aWFsLWJsb2ItZm9yLXRoZS1maXh0dXJl","Created":"2025-06-01T10:00:05.123456789Z","Updated":"2025-06-01T10:00:06.123456789Z","ETag":"IkE2U1laUlJXS1pWVk1HR0FWUFozT1RDV05EIg=="},"Created":"2025-06-01T10:00:05.123456789Z","Updated":"2025-06-01T10:00:06.123456789Z"}');
INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.55555555-2222-3333-4444-555555555555', 'ca-dev-01', 'assigned', 1748772007123456789, '', 0, '{"ID":"4.0a1b2c3d4e5f6071.55555555-2222-3333-4444-555555555555","RegistrationID":"CA-Dev-01","EnrollmentGroupID":"x509-ca","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":{"SubjectName":"CN=Intermediate","SHA1Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCC","SHA256Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100","IssuerName":"CN=Root CA","NotBefore":"2024-01-01T00:00:00Z","NotAfter":"2034-01-01T00:00:00Z","SerialNumber":"02","Version":3}},"TPMKey":"","TPMStorageRootKey":"","Status":"assigned","Payload":null,"Result":{"RegistrationID":"CA-Dev-01","DeviceID":"CA-Dev-01","AssignedHub":"hub-a.example.net","InitialHub":"hub-b.example.net","Status":"assigned","Substatus":"reprovisionedToInitialAssignment","ErrorCode":0,"ErrorMessage":"","Payload":null,"EnrollmentGroupID":"x509-ca","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":{"SubjectName":"CN=Intermediate","SHA1Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCC","SHA256Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100","IssuerName":"CN=Root CA","NotBefore":"2024-01-01T00:00:00Z","NotAfter":"2034-01-01T00:00:00Z","SerialNumber":"02","Version":3}},"TPMAuthenticationKey":"","Created":"2025-06-01T10:00:07.123456789Z","Updated":"2025-06-01T10:00:08.123456789Z","ETag":"IkxUS1FTT0FPTFdUN0xLMzI1WFozTktCSlVFIg=="},"Created":"2025-06-01T10:00:07.123456789Z","Updated":"2025-06-01T10:00:08.123456789Z"}');
INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.66666666-2222-3333-4444-555555555555', 'group-dev-02', 'assigning', 1748772009123456789, 'node-a', 1748772040123456789, '{"ID":"4.0a1b2c3d4e5f6071.66666666-2222-3333-4444-555555555555","RegistrationID":"Group-Dev-02","EnrollmentGroupID":"Factory-Line-1","Attestation":"symmetricKey","X509":null,"TPMKey":"","TPMStorageRootKey":"","Status":"assigning","Payload":{"model":"t<1>","price":"5&6"},"Result":null,"Created":"2025-06-01T10:00:09.123456789Z","Updated":"2025-06-01T10:00:09.123456789Z"}');
INSERT INTO public.operations VALUES ('4.0a1b2c3d4e5f6071.77777777-2222-3333-4444-555555555555', 'x509-device-01', 'assigning', 1748772010123456789, '', 0, '{"ID":"4.0a1b2c3d4e5f6071.77777777-2222-3333-4444-555555555555","RegistrationID":"x509-device-01","EnrollmentGroupID":"","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":null},"TPMKey":"","TPMStorageRootKey":"","Status":"assigning","Payload":null,"Result":null,"Created":"2025-06-01T10:00:10.123456789Z","Updated":"2025-06-01T10:00:10.123456789Z"}');


--
-- Data for Name: registrations; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.registrations VALUES ('group-dev-01', 'factory-line-1', 'IkI0STdCS1VSNlFFSEpKSk9QWkk3SEZJT1VNIg==', '{"RegistrationID":"Group-Dev-01","DeviceID":"Group-Dev-01","AssignedHub":"hub-b.example.net","InitialHub":"hub-a.example.net","Status":"assigned","Substatus":"deviceDataMigrated","ErrorCode":0,"ErrorMessage":"","Payload":{"greeting":"hi <there> & welcome","n":1.50},"EnrollmentGroupID":"Factory-Line-1","Attestation":"symmetricKey","X509":null,"TPMAuthenticationKey":"","Created":"2025-06-01T10:00:00.123456789Z","Updated":"2025-06-01T10:00:01.123456789Z","ETag":"IkI0STdCS1VSNlFFSEpKSk9QWkk3SEZJT1VNIg=="}');
INSERT INTO public.registrations VALUES ('failed-dev', 'x509-signed', 'IloyNE5GN1pXSTIzQzZHUVFQU0RKQ1JNUlhNIg==', '{"RegistrationID":"Failed-Dev","DeviceID":"","AssignedHub":"","InitialHub":"","Status":"failed","Substatus":"","ErrorCode":400207,"ErrorMessage":"Custom allocation failed: \"no hub\" <&>","Payload":null,"EnrollmentGroupID":"x509-signed","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":{"SubjectName":"CN=Intermediate","SHA1Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCC","SHA256Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100","IssuerName":"CN=Root CA","NotBefore":"2024-01-01T00:00:00Z","NotAfter":"2034-01-01T00:00:00Z","SerialNumber":"02","Version":3}},"TPMAuthenticationKey":"","Created":"2025-06-01T10:00:02.123456789Z","Updated":"2025-06-01T10:00:03.123456789Z","ETag":"IloyNE5GN1pXSTIzQzZHUVFQU0RKQ1JNUlhNIg=="}');
INSERT INTO public.registrations VALUES ('tpm-device-01', '', 'IkE2U1laUlJXS1pWVk1HR0FWUFozT1RDV05EIg==', '{"RegistrationID":"tpm-device-01","DeviceID":"tpm-device-01","AssignedHub":"hub-b.example.net","InitialHub":"hub-b.example.net","Status":"assigned","Substatus":"initialAssignment","ErrorCode":0,"ErrorMessage":"","Payload":null,"EnrollmentGroupID":"","Attestation":"tpm","X509":null,"TPMAuthenticationKey":"AAFjcmVkZW50aWFsLWJsb2ItZm9yLXRoZS1maXh0dXJl","Created":"2025-06-01T10:00:05.123456789Z","Updated":"2025-06-01T10:00:06.123456789Z","ETag":"IkE2U1laUlJXS1pWVk1HR0FWUFozT1RDV05EIg=="}');
INSERT INTO public.registrations VALUES ('ca-dev-01', 'x509-ca', 'IkxUS1FTT0FPTFdUN0xLMzI1WFozTktCSlVFIg==', '{"RegistrationID":"CA-Dev-01","DeviceID":"CA-Dev-01","AssignedHub":"hub-a.example.net","InitialHub":"hub-b.example.net","Status":"assigned","Substatus":"reprovisionedToInitialAssignment","ErrorCode":0,"ErrorMessage":"","Payload":null,"EnrollmentGroupID":"x509-ca","Attestation":"x509","X509":{"Certificate":{"SubjectName":"CN=x509-device-01","SHA1Thumbprint":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","SHA256Thumbprint":"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF","IssuerName":"CN=Intermediate","NotBefore":"2025-01-01T00:00:00Z","NotAfter":"2026-01-01T00:00:00Z","SerialNumber":"1F2E3D","Version":3},"Signing":{"SubjectName":"CN=Intermediate","SHA1Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCC","SHA256Thumbprint":"FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100","IssuerName":"CN=Root CA","NotBefore":"2024-01-01T00:00:00Z","NotAfter":"2034-01-01T00:00:00Z","SerialNumber":"02","Version":3}},"TPMAuthenticationKey":"","Created":"2025-06-01T10:00:07.123456789Z","Updated":"2025-06-01T10:00:08.123456789Z","ETag":"IkxUS1FTT0FPTFdUN0xLMzI1WFozTktCSlVFIg=="}');


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.schema_migrations VALUES (1);


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
-- Name: operations_pending; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX operations_pending ON public.operations USING btree (created) WHERE (status = 'assigning'::text);


--
-- Name: registrations_by_group; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX registrations_by_group ON public.registrations USING btree (group_id, id);


--
-- PostgreSQL database dump complete
--

\unrestrict dcKbAE5Bn82UL3eAUBMR44xeXdtbfJYbW6lJLxssUOVnn4O9mzdcebQ3gzep5MB

