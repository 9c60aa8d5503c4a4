{{/* Chart name. */}}
{{- define "emailplan.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: <release>-emailplan, or the release name when it already says emailplan. */}}
{{- define "emailplan.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "emailplan.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "emailplan.labels" -}}
helm.sh/chart: {{ include "emailplan.chart" . }}
app.kubernetes.io/name: {{ include "emailplan.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: emailplan
{{- end -}}

{{/* Selector labels; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "emailplan.selectorLabels" -}}
app.kubernetes.io/name: {{ include "emailplan.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "emailplan.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) -}}
{{- end -}}
{{- end -}}

{{- define "emailplan.operator.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "emailplan.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "emailplan.dataplane.serviceAccountName" -}}
{{- default (printf "%s-dataplane" (include "emailplan.fullname" .)) .Values.dataPlaneServiceAccount.name -}}
{{- end -}}

{{- define "emailplan.peeringName" -}}
{{- default (include "emailplan.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{- define "emailplan.apiServiceName" -}}
{{- printf "%s-api" (include "emailplan.fullname" .) -}}
{{- end -}}

{{- define "emailplan.dataplaneConfigName" -}}
{{- printf "%s-dataplane" (include "emailplan.fullname" .) -}}
{{- end -}}

{{/* In-cluster URL of the data-plane API, used by the operator. */}}
{{- define "emailplan.apiUrl" -}}
{{- if .Values.api.service.clusterIP -}}
{{- printf "http://%s:%d" .Values.api.service.clusterIP (int .Values.api.service.port) -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d" (include "emailplan.apiServiceName" .) .Release.Namespace (int .Values.api.service.port) -}}
{{- end -}}
{{- end -}}

{{- define "emailplan.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{- .Values.publicUrl | trimSuffix "/" -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- printf "https://%s" (first .Values.ingress.hosts) -}}
{{- else -}}
{{- include "emailplan.apiUrl" . -}}
{{- end -}}
{{- end -}}

{{/* Secrets the sender pods receive with envFrom (deduplicated, in a stable order). */}}
{{- define "emailplan.senderSecretNames" -}}
{{- $names := list .Values.secrets.database.existingSecret .Values.secrets.tokenKey.existingSecret -}}
{{- with .Values.secrets.aws.existingSecret }}{{ $names = append $names . }}{{ end -}}
{{- with .Values.secrets.sentry.existingSecret }}{{ $names = append $names . }}{{ end -}}
{{- $names | uniq | join "," -}}
{{- end -}}

{{/* One env entry read from a Secret key; call with (dict "name" ENV "secret" NAME "optional" BOOL). */}}
{{- define "emailplan.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret | quote }}
      key: {{ .name }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* AWS credentials from the optional Secret (api only; sender pods get it by envFrom). */}}
{{- define "emailplan.awsEnv" -}}
{{- with .Values.secrets.aws.existingSecret -}}
{{ include "emailplan.secretEnv" (dict "name" "AWS_ACCESS_KEY_ID" "secret" .) }}
{{ include "emailplan.secretEnv" (dict "name" "AWS_SECRET_ACCESS_KEY" "secret" .) }}
{{ include "emailplan.secretEnv" (dict "name" "AWS_SESSION_TOKEN" "secret" . "optional" true) }}
{{- end -}}
{{- end -}}

{{- define "emailplan.sentryEnv" -}}
{{- with .Values.secrets.sentry.existingSecret -}}
{{ include "emailplan.secretEnv" (dict "name" "EMAILPLAN_SENTRY_DSN" "secret" .) }}
{{- end -}}
{{- end -}}

{{- define "emailplan.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "emailplan.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* Scratch space: the root filesystem is read-only. */}}
{{- define "emailplan.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{/* What the operator does in a namespace where campaigns live (see operator-rbac.yaml). */}}
{{- define "emailplan.operator.workRules" -}}
- apiGroups: ["emailplan.io"]
  resources: ["emailplans", "emailplans/status", "emailplans/finalizers"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
