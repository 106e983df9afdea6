{{- define "tap.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tap.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tap.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "tap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tap.selector" -}}
app.kubernetes.io/name: {{ include "tap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tap.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest pins the image */}}
{{- define "tap.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Egress ports: those of config.nats.url, config.clickhouse.addr, config.vault.address. */}}
{{- define "tap.egressPorts" -}}
{{- $ports := list -}}
{{- $cfg := .Values.config -}}
{{- $nats := (($cfg.nats | default dict).url) | default "" -}}
{{- range $url := splitList "," $nats -}}
{{- $u := urlParse (trim $url) -}}
{{- $hostport := splitList ":" $u.host -}}
{{- if gt (len $hostport) 1 -}}{{- $ports = append $ports (last $hostport) -}}
{{- else if eq $u.scheme "wss" -}}{{- $ports = append $ports "443" -}}
{{- else if eq $u.scheme "ws" -}}{{- $ports = append $ports "80" -}}
{{- else -}}{{- $ports = append $ports "4222" -}}{{- end -}}
{{- end -}}
{{- $ch := $cfg.clickhouse | default dict -}}
{{- if $ch.addr -}}
{{- range $entry := splitList "," $ch.addr -}}
{{- $hostport := splitList ":" (trim $entry) -}}
{{- if gt (len $hostport) 1 -}}{{- $ports = append $ports (last $hostport) -}}
{{- else if $ch.secure -}}{{- $ports = append $ports "8443" -}}
{{- else -}}{{- $ports = append $ports "8123" -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- $vault := ($cfg.vault | default dict).address | default "" -}}
{{- if $vault -}}
{{- $u := urlParse $vault -}}
{{- $hostport := splitList ":" $u.host -}}
{{- if gt (len $hostport) 1 -}}{{- $ports = append $ports (last $hostport) -}}
{{- else if eq $u.scheme "https" -}}{{- $ports = append $ports "443" -}}
{{- else -}}{{- $ports = append $ports "80" -}}{{- end -}}
{{- end -}}
{{- $ports | uniq | join "," -}}
{{- end -}}
